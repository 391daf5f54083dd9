"""Audit (PCI DSS 10): who did what, from where.

- every request's log line: client IP, user agent (escaped, cut), API key id, outcome;
- failed authentication: a WARNING with the IP, a per-IP limit (429 with Retry-After) that a
  valid key never meets, and one alert per IP and hour;
- admin and key-management actions in audit_events, from the dashboard and from the CLI.
"""

from __future__ import annotations

import json
import logging
import pwd
import os

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import select, text

from kamiyo.extensions import db
from kamiyo.models import AlertSent, AuditEntry
from tests.support import both_databases, csrf_token, login, make_key, make_user

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

PAYMENTS = "/api/v1/payments"
BAD_KEY = {"Authorization": "Bearer kmy_guessed-0123456789"}
OS_USER = pwd.getpwuid(os.getuid()).pw_name


def request_lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "kamiyo.request"]


def formatted(caplog, records) -> str:
    """Every field of the records, before any redaction: nothing secret may be there at all."""
    return "\n".join(json.dumps({**vars(r), "message": r.getMessage()}, default=str) for r in records)


# --- the request log line ------------------------------------------------------------------


def test_each_request_line_carries_ip_agent_key_id_and_outcome(app, client, caplog):
    caplog.set_level(logging.INFO, logger="kamiyo.request")
    headers = make_key(app)
    with app.app_context():
        from kamiyo.models import ApiKey

        key_id = db.session.scalar(select(ApiKey.id))
    agent = "evil\r\n{\"level\": \"CRITICAL\"}\x00\x1b[31m" + "A" * 400
    # Raw in the environ: the test client itself refuses a newline in a header it is given.
    client.get(f"{PAYMENTS}/customers", headers=headers,
               environ_base={"REMOTE_ADDR": "203.0.113.7", "HTTP_USER_AGENT": agent})
    client.get(f"{PAYMENTS}/customers", headers=BAD_KEY)
    ok, refused = request_lines(caplog)
    assert (ok.client_ip, ok.api_key_id, ok.status, ok.outcome) == ("203.0.113.7", key_id, 200, "ok")
    assert ok.user_agent.startswith('evil\\x0d\\x0a{"level": "CRITICAL"}\\x00\\x1b[31mAAA')
    assert len(ok.user_agent) == 256 and not any(ord(c) < 32 for c in ok.user_agent)
    assert (refused.client_ip, refused.api_key_id, refused.outcome) == ("127.0.0.1", None, "unauthenticated")
    line = formatted(caplog, [ok, refused])
    assert headers["Authorization"].split()[1] not in line and "kmy_guessed" not in line
    assert json.loads(line.splitlines()[0])["api_key_id"] == key_id
    assert json.loads(line.splitlines()[0])["user_agent"] == ok.user_agent


def test_outcomes_of_a_scope_refusal_and_a_missing_page(app, client, caplog):
    from kamiyo.api_keys import create_api_key

    caplog.set_level(logging.INFO, logger="kamiyo.request")
    with app.app_context():
        _, reader = create_api_key("reader", ["payments:read"])
    client.post(f"{PAYMENTS}/customers", json={}, headers={"Authorization": f"Bearer {reader}"})
    client.get("/nowhere")
    assert [r.outcome for r in request_lines(caplog)] == ["forbidden", "client_error"]


# --- failed authentication -----------------------------------------------------------------


def test_a_failed_key_logs_a_warning_with_the_ip_and_never_the_key(client, caplog):
    caplog.set_level(logging.INFO)
    client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": "198.51.100.9"})
    client.get(f"{PAYMENTS}/customers")
    warnings = [r for r in caplog.records if r.name == "kamiyo.auth"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert [r.client_ip for r in warnings] == ["198.51.100.9", "127.0.0.1"]
    assert [r.reason for r in warnings] == ["unknown or revoked key", "no key"]
    assert "kmy_guessed" not in formatted(caplog, caplog.records)


@pytest.fixture
def limited(make_app):
    return make_app(AUTH_FAILURE_RATE_LIMIT="3/minute")


def test_failures_past_the_limit_answer_429_with_retry_after_and_a_valid_key_still_passes(limited):
    client = limited.test_client()
    valid = make_key(limited)
    answers = [client.get(f"{PAYMENTS}/customers", headers=BAD_KEY).status_code for _ in range(3)]
    assert answers == [401, 401, 401]
    blocked = client.get(f"{PAYMENTS}/customers", headers=BAD_KEY)
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 61
    assert blocked.get_json()["error"]["code"] == "rate_limited"
    assert client.get(f"{PAYMENTS}/customers").status_code == 429  # no key at all counts too
    # The same IP's valid key is never slowed by the failures (a NAT, a shared proxy).
    assert client.get(f"{PAYMENTS}/customers", headers=valid).status_code == 200
    # Another IP is not blocked by this one.
    other = client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert other.status_code == 401


def test_a_wrong_metrics_token_counts_against_the_same_limit(make_app):
    app = make_app(AUTH_FAILURE_RATE_LIMIT="2/minute", METRICS_TOKEN="metrics-secret-token")
    client = app.test_client()
    wrong = {"Authorization": "Bearer not-the-token"}
    assert [client.get("/metrics", headers=wrong).status_code for _ in range(2)] == [401, 401]
    assert client.get("/metrics", headers=wrong).status_code == 429
    assert client.get(f"{PAYMENTS}/customers", headers=BAD_KEY).status_code == 429
    # The metrics token is one shared secret: past the limit, right or wrong answers 429 alike,
    # so a guesser cannot tell. An API key (256 random bits) still passes.
    right = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret-token"})
    assert right.status_code == 429 and right.headers["Retry-After"]
    assert client.get(f"{PAYMENTS}/customers", headers=make_key(app)).status_code == 200


def test_the_limit_is_shared_by_workers_through_redis(make_app, redis_url):
    first = make_app(AUTH_FAILURE_RATE_LIMIT="2/minute", REDIS_URL=redis_url, RATELIMIT_KEY_PREFIX=os.urandom(4).hex())
    second = make_app(
        AUTH_FAILURE_RATE_LIMIT="2/minute", REDIS_URL=redis_url, RATELIMIT_KEY_PREFIX=first.config["RATELIMIT_KEY_PREFIX"]
    )
    assert first.test_client().get(f"{PAYMENTS}/customers", headers=BAD_KEY).status_code == 401
    assert second.test_client().get(f"{PAYMENTS}/customers", headers=BAD_KEY).status_code == 401
    assert first.test_client().get(f"{PAYMENTS}/customers", headers=BAD_KEY).status_code == 429


def test_a_bad_limit_setting_stops_start_up(make_app):
    from kamiyo.config import ConfigError

    with pytest.raises(ConfigError, match="AUTH_FAILURE_RATE_LIMIT"):
        make_app(AUTH_FAILURE_RATE_LIMIT="lots")


def test_repeated_failures_alert_once_per_ip_and_hour(limited, make_app, app_config, slack, caplog):
    url, received = slack
    limited.config["ALERT_WEBHOOK_URL"] = url
    caplog.set_level(logging.INFO, logger="kamiyo.alerts")
    client = limited.test_client()
    for _ in range(6):
        client.get(f"{PAYMENTS}/customers", headers=BAD_KEY)
    # A second worker on the same database: de-duplicated there too.
    twin = make_app(AUTH_FAILURE_RATE_LIMIT="3/minute", ALERT_WEBHOOK_URL=url)
    for _ in range(4):
        twin.test_client().get(f"{PAYMENTS}/customers", headers=BAD_KEY)
    alerts = [r for r in caplog.records if r.getMessage().startswith("ALERT repeated_auth_failures")]
    assert len(alerts) == 1 and alerts[0].levelno == logging.WARNING and alerts[0].client_ip == "127.0.0.1"
    # Another IP is another alert.
    for _ in range(4):
        client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": "192.0.2.44"})
    alerts = [r for r in caplog.records if r.getMessage().startswith("ALERT repeated_auth_failures")]
    assert [a.client_ip for a in alerts] == ["127.0.0.1", "192.0.2.44"]
    with limited.app_context():
        keys = sorted(db.session.scalars(select(AlertSent.dedup_key)))
    assert keys == ["auth-failures:127.0.0.1", "auth-failures:192.0.2.44"]
    from tests.support import wait_until

    wait_until(lambda: len(received) == 2)
    assert "192.0.2.44" in json.dumps(received)


# --- audit_events ---------------------------------------------------------------------------


def events(app) -> list[tuple]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(r.actor, r.action, r.target, r.outcome, r.client_ip) for r in rows]


def test_dashboard_actions_are_audit_events_with_the_ip(app):
    from kamiyo.api_keys import create_api_key

    make_user(app, "admin@example.com", "admin")
    with app.app_context():
        key, _ = create_api_key("billing")
        key_id = key.id
    client = app.test_client()
    login(client, "admin@example.com")
    page = client.get(f"/dashboard/confirm/revoke-api-key?target={key_id}").get_data(as_text=True)
    client.post("/dashboard/actions/revoke-api-key", data={"target": str(key_id), "csrf_token": csrf_token(page)},
                environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert events(app) == [("admin@example.com", "revoke-api-key", str(key_id), "ok", "10.1.2.3")]
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM audit_events")).scalar() == 1
    audit_page = client.get("/dashboard/audit").get_data(as_text=True)
    assert "revoke-api-key" in audit_page and "admin@example.com" in audit_page and "<td>10.1.2.3</td>" in audit_page


def test_cli_key_and_user_commands_are_audit_events_with_the_os_user(app, runner):
    actor = f"cli:{OS_USER}"
    created = runner.invoke(args=["api-keys", "create", "reports", "--scope", "payments:read"])
    assert created.exit_code == 0
    plaintext = created.output.strip().splitlines()[-1]
    refused = runner.invoke(args=["api-keys", "create", "x", "--scope", "everything"])
    assert refused.exit_code == 2
    assert runner.invoke(args=["api-keys", "revoke", "1"]).exit_code == 0
    assert runner.invoke(args=["api-keys", "revoke", "99"]).exit_code == 1
    assert runner.invoke(args=["users", "create", "ops@example.com", "--role", "admin", "--password-stdin"],
                         input="a long enough password\n").exit_code == 0
    assert runner.invoke(args=["users", "disable", "ops@example.com"]).exit_code == 0
    assert runner.invoke(args=["scheduler", "run-job", "no-such-job"]).exit_code == 1
    assert runner.invoke(args=["webhooks", "replay", "evt_unknown"]).exit_code == 1
    rows = events(app)
    assert [(a, act, out, ip) for a, act, _, out, ip in rows] == [
        (actor, "create-api-key", "ok", None),
        (actor, "create-api-key", "refused", None),
        (actor, "revoke-api-key", "ok", None),
        (actor, "revoke-api-key", "failed", None),
        (actor, "create-user", "ok", None),
        (actor, "disable-user", "ok", None),
        (actor, "run-job", "failed", None),
        (actor, "replay-webhook", "failed", None),
    ]
    assert rows[0][2] == f"reports ({plaintext[:12]}...)" and rows[4][2] == "ops@example.com"
    with app.app_context():
        details = " ".join(db.session.scalars(select(AuditEntry.detail).where(AuditEntry.detail.is_not(None))))
    assert plaintext not in details and "a long enough password" not in details
    assert "scopes: payments:read" in details


def test_cli_reconcile_is_an_audit_event(stripe_app):
    result = stripe_app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert result.exit_code == 0, result.output
    assert events(stripe_app) == [(f"cli:{OS_USER}", "run-reconcile", "customers", "ok", None)]


# --- migration 0013 -----------------------------------------------------------------------


@both_databases
def test_0013_carries_the_audit_log_over_and_its_downgrade_revokes_restricted_keys(make_app, app_config):
    app = make_app()
    with app.app_context():
        downgrade(revision="0012_rate_limit_counters")
        db.session.execute(text(
            "INSERT INTO audit_log (occurred_at, actor, action, target, outcome, client_ip)"
            " VALUES (CURRENT_TIMESTAMP, 'a@example.com', 'reset-breaker', '-', 'ok', '10.0.0.1')"
        ))
        db.session.execute(text(
            "INSERT INTO api_keys (name, key_hash, prefix, created_at) VALUES ('old', :h, 'kmy_old', CURRENT_TIMESTAMP)"
        ), {"h": "0" * 64})
        db.session.commit()
        upgrade()
        assert events(app) == [("a@example.com", "reset-breaker", "-", "ok", "10.0.0.1")]
        from kamiyo.api_keys import create_api_key
        from kamiyo.models import ApiKey

        old = db.session.scalar(select(ApiKey).where(ApiKey.name == "old"))
        assert old.scopes is None and old.expires_at is None  # a full key, as before
        create_api_key("restricted", ["payments:read"])
        db.session.commit()
        db.session.add(AuditEntry(actor="b", action="x", target="-", outcome="ok"))  # the id sequence follows
        db.session.commit()
        downgrade(revision="0012_rate_limit_counters")
        revoked = dict(db.session.execute(text("SELECT name, revoked_at IS NOT NULL FROM api_keys")).all())
        assert revoked == {"old": False, "restricted": True}
        assert db.session.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
        db.session.commit()  # no open transaction holding a lock on the tables the upgrade moves
        upgrade()
        assert len(events(app)) == 2
