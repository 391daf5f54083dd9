"""`flask --app wsgi preflight`: a healthy setup (SQLite, Redis, localstripe behind the emulator
proxy with a webhook endpoint) answers 0, and each broken condition its exit code and line."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import stripe

from kamiyo.release import checks
from kamiyo.release.checks import Check, check_clock, check_migrations, check_webhook_endpoint
from tests.support import ROOT, closed_port_url

PUBLIC_URL = "https://payments.example.com"
ENDPOINT_URL = PUBLIC_URL + "/api/v1/webhooks/stripe"
# A version 10 days old whatever today is (the suite also runs with the clock moved ahead).
VERSION = (dt.date.today() - dt.timedelta(days=10)).isoformat()
SECRETS = {
    "SECRET_KEY": "k" * 40,
    "STRIPE_SECRET_KEY": "sk_test_preflight4242abcd",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_preflight4242abcd",
    "STRIPE_WEBHOOK_SECRET": "whsec_preflightsecretone",
}


@pytest.fixture
def setup(make_app, proxy, redis_url, monkeypatch):
    """A healthy setup: the app's own settings, and a way to run preflight on it."""
    monkeypatch.setenv("WEB_CONCURRENCY", "2")

    def run(*args: str, **overrides):
        settings = {**SECRETS, "STRIPE_API_BASE": proxy.url, "REDIS_URL": redis_url, "PUBLIC_URL": PUBLIC_URL,
                    "STRIPE_API_VERSION": VERSION, "STRIPE_HEALTH_TIMEOUT_SECONDS": 5.0, **overrides}
        app = make_app(**settings)
        result = app.test_cli_runner().invoke(args=["preflight", *args])
        return app, result

    return run


def add_endpoint(proxy, url: str = ENDPOINT_URL, events: list[str] | None = None,
                 secret_key: str = SECRETS["STRIPE_SECRET_KEY"], api_version: str = VERSION) -> dict:
    """A webhook endpoint made as on Stripe: POST /v1/webhook_endpoints (the proxy keeps it)."""
    from kamiyo.webhooks.queries import handled_event_types

    client = stripe.StripeClient(secret_key, base_addresses={"api": proxy.url}, max_network_retries=0)
    created = client.v1.webhook_endpoints.create(params={
        "url": url, "enabled_events": events or handled_event_types(), "api_version": api_version})
    return created.to_dict()


def lines(result) -> list[str]:
    return result.output.splitlines()


def line_of(result, name: str) -> str:
    [found] = [line for line in lines(result) if line.split("] ", 1)[-1].startswith(name + ":")]
    return found


def test_a_healthy_setup_answers_0_with_a_line_per_check(setup, proxy):
    endpoint = add_endpoint(proxy)
    _, result = setup()
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in lines(result)] == [
        "[ok  ] SECRET_KEY", "[ok  ] STRIPE_SECRET_KEY", "[ok  ] STRIPE_PUBLISHABLE_KEY",
        "[ok  ] STRIPE_WEBHOOK_SECRET", "[ok  ] key modes", "[ok  ] database", "[ok  ] migrations",
        "[ok  ] redis", "[ok  ] stripe", "[ok  ] webhook endpoint", "[ok  ] stripe api version", "[ok  ] clock",
        "preflight"]
    assert line_of(result, "webhook endpoint") == (
        f"[ok  ] webhook endpoint: {endpoint['id']} -> {ENDPOINT_URL}, enabled, api_version {VERSION}, "
        "all 11 handled event types")
    assert line_of(result, "STRIPE_SECRET_KEY") == "[ok  ] STRIPE_SECRET_KEY: sk_test_... (test mode)"
    assert lines(result)[-1] == "preflight: 12 ok, 0 warning(s), 0 failure(s) (exit 0)"
    # Read-only: a list of one customer and the endpoints; nothing posted, no secret printed.
    assert [(r.method, r.path) for r in proxy.requests if r.method != "POST"] == [
        ("GET", "/v1/customers"), ("GET", "/v1/webhook_endpoints")]
    assert "preflight4242" not in result.output and "secretone" not in result.output


def test_json_is_one_object_with_every_check(setup, proxy):
    add_endpoint(proxy)
    _, result = setup("--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert (body["command"], body["status"], body["exit_code"]) == ("preflight", "ok", 0)
    assert {c["name"]: c["status"] for c in body["checks"]}["webhook endpoint"] == "ok"
    assert set(body["checks"][0]) == {"name", "status", "line", "action"}
    [endpoint] = body["facts"]["webhook_endpoints"]
    assert endpoint["url"] == ENDPOINT_URL and "secret" not in endpoint


@pytest.mark.parametrize(("overrides", "name", "expected"), [
    ({"STRIPE_WEBHOOK_SECRET": None}, "STRIPE_WEBHOOK_SECRET",
     "[FAIL] STRIPE_WEBHOOK_SECRET: not set -> set it to the endpoint's signing secret "
     "(whsec_...; during a rotation: new,old)"),
    ({"STRIPE_WEBHOOK_SECRET": "whsec_preflightsecretone,,whsec_othersecret2"}, "STRIPE_WEBHOOK_SECRET",
     "[FAIL] STRIPE_WEBHOOK_SECRET: 3 secret(s), ill-formed: number 2 (expected whsec_ and the secret, "
     "comma-separated, no empty item) -> copy the signing secret again from the webhook endpoint's page "
     "in the Stripe dashboard"),
    ({"STRIPE_SECRET_KEY": "pk_test_preflight4242abcd"}, "STRIPE_SECRET_KEY",
     "[FAIL] STRIPE_SECRET_KEY: ill-formed: pk_test_..., expected sk_live_/sk_test_/rk_live_/rk_test_ and the "
     "key -> copy the secret key again from the Stripe dashboard (Developers > API keys)"),
    ({"STRIPE_SECRET_KEY": "sk_live_preflight4242abcd"}, "key modes",
     "[FAIL] key modes: STRIPE_SECRET_KEY is live mode, STRIPE_PUBLISHABLE_KEY is test mode -> use the two "
     "keys of one mode (live with live) from the same Stripe account"),
])
def test_a_missing_or_ill_formed_secret_or_mixed_modes_fail(setup, proxy, overrides, name, expected):
    add_endpoint(proxy, secret_key=overrides.get("STRIPE_SECRET_KEY") or SECRETS["STRIPE_SECRET_KEY"])
    _, result = setup(**overrides)
    assert result.exit_code == 2, result.output
    assert line_of(result, name) == expected
    assert "preflight4242" not in result.output and "secretone" not in result.output


def test_a_configuration_that_does_not_load_is_a_failure_too(tmp_path):
    """The real command, outside tests: a missing secret stops create_app; preflight still says
    which, with its exit code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "SECRET_KEY"))}
    env.update(KAMIYO_INSTANCE_PATH=str(tmp_path), SECRET_KEY="k" * 40,
               STRIPE_SECRET_KEY=SECRETS["STRIPE_SECRET_KEY"], DATABASE_URL=f"sqlite:///{tmp_path}/x.db")
    flask = Path(sys.executable).with_name("flask")
    done = subprocess.run([flask, "--app", "wsgi", "preflight"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("[FAIL] configuration: does not load: STRIPE_WEBHOOK_SECRET is not set.")
    assert "[FAIL] STRIPE_WEBHOOK_SECRET: not set -> " in done.stdout
    assert "[ok  ] STRIPE_SECRET_KEY: sk_test_... (test mode)" in done.stdout
    assert "Traceback" not in done.stderr and "preflight4242" not in done.stdout + done.stderr


def _downgrade(app, steps: int) -> str:
    from flask_migrate import downgrade

    from kamiyo.release.preflight import migration_chain

    with app.app_context():
        downgrade(revision=f"-{steps}")
        chain = migration_chain()
    return chain[-1 - steps]


def test_the_database_one_migration_behind_is_what_a_release_expects(setup, proxy):
    from kamiyo.release.preflight import migration_chain

    add_endpoint(proxy)
    app, _ = setup()
    at = _downgrade(app, 1)
    result = app.test_cli_runner().invoke(args=["preflight"])
    assert result.exit_code == 0, result.output
    head = migration_chain()[-1]
    assert line_of(result, "migrations") == (
        f"[ok  ] migrations: database at {at}, one step behind head {head}: the release's db upgrade applies it")


def test_the_database_two_migrations_behind_fails(setup, proxy):
    from kamiyo.release.preflight import migration_chain

    add_endpoint(proxy)
    app, _ = setup()
    at = _downgrade(app, 2)
    result = app.test_cli_runner().invoke(args=["preflight"])
    assert result.exit_code == 2, result.output
    chain = migration_chain()
    assert line_of(result, "migrations").startswith(
        f"[FAIL] migrations: database at {at}, 2 steps behind head {chain[-1]} (pending: {chain[-2]}, {chain[-1]}) "
        "-> a release moves one migration at a time")


def test_redis_configured_but_down_fails(setup, proxy):
    add_endpoint(proxy)
    down = closed_port_url().replace("http://", "redis://") + "/0"
    _, result = setup(REDIS_URL=down)
    assert result.exit_code == 2, result.output
    assert line_of(result, "redis") == (
        f"[FAIL] redis: configured ({down}) but not answering: ConnectionError -> start Redis "
        "(systemctl start redis-server) or fix REDIS_URL / RATELIMIT_STORAGE_URI")


def test_no_redis_with_several_workers_warns(setup, proxy):
    add_endpoint(proxy)
    _, result = setup(REDIS_URL=None)
    assert result.exit_code == 1, result.output
    assert line_of(result, "redis") == (
        "[WARN] redis: not configured with WEB_CONCURRENCY=2: rate limits and the circuit breaker are counted "
        "per worker -> set REDIS_URL (or run one worker)")
    _, result = setup("--hosts", "2", REDIS_URL=None)
    assert result.exit_code == 2, result.output
    assert line_of(result, "redis").startswith("[FAIL] redis: not configured, and 2 hosts run this service")


def test_no_webhook_endpoint_fails(setup):
    _, result = setup()
    assert result.exit_code == 2, result.output
    assert line_of(result, "webhook endpoint") == (
        f"[FAIL] webhook endpoint: no endpoint points at {ENDPOINT_URL} (none at all) -> create one in the "
        f"Stripe dashboard (Developers > Webhooks) for {ENDPOINT_URL}, and put its signing secret in "
        "STRIPE_WEBHOOK_SECRET")


def test_an_endpoint_pointing_elsewhere_fails(setup, proxy):
    add_endpoint(proxy, url="https://old-host.example.com/api/v1/webhooks/stripe")
    add_endpoint(proxy, secret_key="sk_test_anotheraccount42", url=ENDPOINT_URL)  # another account's
    _, result = setup()
    assert result.exit_code == 2, result.output
    assert line_of(result, "webhook endpoint").startswith(
        f"[FAIL] webhook endpoint: no endpoint points at {ENDPOINT_URL} "
        "(endpoints: https://old-host.example.com/api/v1/webhooks/stripe) -> ")


def test_an_endpoint_missing_handled_events_warns_and_a_disabled_one_fails(setup, proxy):
    endpoint = add_endpoint(proxy, events=["customer.created", "invoice.paid"])
    _, result = setup()
    assert result.exit_code == 1, result.output
    assert "not enabled for 9 event type(s) our handlers take: customer.deleted, " in line_of(result, "webhook endpoint")
    client = stripe.StripeClient(SECRETS["STRIPE_SECRET_KEY"], base_addresses={"api": proxy.url})
    client.v1.webhook_endpoints.update(endpoint["id"], params={"disabled": True})
    _, result = setup()
    assert result.exit_code == 2, result.output
    assert line_of(result, "webhook endpoint") == (
        f"[FAIL] webhook endpoint: {endpoint['id']} points at {ENDPOINT_URL} but is disabled -> enable it in the "
        "Stripe dashboard (Developers > Webhooks)")


def test_stripe_unreachable_fails_and_skips_what_needs_it(setup):
    _, result = setup(STRIPE_API_BASE=closed_port_url(), STRIPE_HEALTH_TIMEOUT_SECONDS=1.0)
    assert result.exit_code == 2, result.output
    assert line_of(result, "stripe").startswith("[FAIL] stripe: no answer from http://127.0.0.1:")
    assert not [line for line in lines(result) if "webhook endpoint:" in line or "clock:" in line]


# --- the decisions, from literal facts ----------------------------------------------------

NOW = dt.datetime(2026, 12, 6, 6, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("header", "status", "line"), [
    ("Sun, 06 Dec 2026 06:00:01 GMT", "ok", "within 1 s of Stripe's (tolerance 300 s)"),
    ("Sun, 06 Dec 2026 05:58:30 GMT", "warn", "90 s ahead of Stripe's (webhook tolerance 300 s)"),
    ("Sun, 06 Dec 2026 06:05:01 GMT", "fail",
     "301 s behind Stripe's, beyond the webhook tolerance of 300 s: every webhook would be refused"),
    (None, "warn", "Stripe's answer had no Date header"),
])
def test_the_clock_against_stripes_date_header(header, status, line):
    assert check_clock(header, NOW, 300) == Check("clock", status, line, check_clock(header, NOW, 300).action)


def test_migrations_ahead_of_the_code_or_empty():
    chain = ["0001", "0002", "0003"]
    assert check_migrations("0004", chain).status == "fail"
    assert "a revision this code does not have" in check_migrations("0004", chain).line
    assert check_migrations(None, chain).status == "warn"
    assert check_migrations("0003", chain) == Check("migrations", "ok", "database at head 0003")


def test_an_endpoint_on_another_api_version_warns():
    endpoint = {"id": "we_1", "url": ENDPOINT_URL, "status": "enabled", "enabled_events": ["*"],
                "api_version": "2020-08-27"}
    found = check_webhook_endpoint([endpoint], PUBLIC_URL + "/", ["customer.created"], "2026-10-28.endive")
    assert found.status == "warn" and "not the configured 2026-10-28.endive" in found.line
    assert check_webhook_endpoint(None, PUBLIC_URL, [], "x").status == "warn"
    assert checks.exit_code([found, Check("x", "ok", "")]) == 1
