"""Least privilege: API key scopes (payments:read, payments:write, ops:read), expiry, and the
payments health answer that shows its detail only to a key with ops:read."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from sqlalchemy import select, text

from kamiyo.api_keys import create_api_key
from kamiyo.extensions import db
from kamiyo.models import ApiKey
from kamiyo.scopes import parse_duration

PAYMENTS = "/api/v1/payments"
# Far from a day boundary: a key made at NOW for 90 days expires on a date the test can write down.
NOW = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.UTC)


def key_for(app, *scopes: str, expires_in: dt.timedelta | None = None) -> dict[str, str]:
    with app.app_context():
        _, plaintext = create_api_key("scoped", scopes, expires_in)
    return {"Authorization": f"Bearer {plaintext}"}


def create_key(runner, *args: str) -> str:
    result = runner.invoke(args=["api-keys", "create", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_a_read_only_key_reads_but_cannot_create_or_cancel(app, client):
    reader = key_for(app, "payments:read")
    assert client.get(f"{PAYMENTS}/customers", headers=reader).status_code == 200
    assert client.get(f"{PAYMENTS}/subscriptions", headers=reader).status_code == 200
    for path in ("/customers", "/subscriptions", "/subscriptions/1/cancel"):
        answer = client.post(f"{PAYMENTS}{path}", json={"user_id": "u1", "email": "a@example.com"}, headers=reader)
        assert answer.status_code == 403, (path, answer.get_json())
        error = answer.get_json()["error"]
        assert error["code"] == "insufficient_scope" and "payments:write" in error["message"]
        assert set(error) >= {"code", "message", "user_action", "support_id"}
        assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]
    # Nor the ops numbers.
    assert client.get("/api/v1/ops/summary", headers=reader).get_json()["error"]["code"] == "insufficient_scope"


def test_a_write_only_key_cannot_read_customers(app, client):
    writer = key_for(app, "payments:write")
    answer = client.get(f"{PAYMENTS}/customers/1", headers=writer)
    assert answer.status_code == 403 and answer.get_json()["error"]["code"] == "insufficient_scope"


def test_an_ops_key_reads_the_ops_api_and_nothing_of_the_customers(app, client):
    ops = key_for(app, "ops:read")
    assert client.get("/api/v1/ops/summary", headers=ops).status_code == 200
    assert client.get(f"{PAYMENTS}/customers", headers=ops).status_code == 403


def test_a_key_made_without_scopes_is_a_full_key_and_so_is_every_existing_key(app, client, runner):
    full = {"Authorization": f"Bearer {create_key(runner, 'everything')}"}
    for path in (f"{PAYMENTS}/customers", "/api/v1/ops/summary"):
        assert client.get(path, headers=full).status_code == 200
    assert client.post(f"{PAYMENTS}/subscriptions/1/cancel", headers=full).status_code == 404  # past the guard
    with app.app_context():
        # A key as made before scopes existed: no scopes column value.
        db.session.execute(text("UPDATE api_keys SET scopes = NULL"))
        db.session.commit()
    assert client.get("/api/v1/ops/summary", headers=full).status_code == 200


def test_cli_scopes_are_repeatable_validated_and_listed(app, runner):
    key = create_key(runner, "reporting", "--scope", "payments:read", "--scope", "ops:read")
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.scopes == "ops:read payments:read"
    bad = runner.invoke(args=["api-keys", "create", "x", "--scope", "payments:admin"])
    assert bad.exit_code == 2 and "unknown scope 'payments:admin'" in bad.output
    assert key not in bad.output
    listed = runner.invoke(args=["api-keys", "list"]).output
    assert "SCOPES" in listed and "EXPIRES" in listed
    assert "ops:read, payments:read" in listed and "never" in listed


def test_the_dashboard_lists_scopes_and_expiry(app):
    from tests.support import login, make_user

    with time_machine.travel(NOW, tick=True):
        key_for(app, "ops:read", expires_in=dt.timedelta(days=90))
        make_user(app, "viewer@example.com")
        client = app.test_client()
        login(client, "viewer@example.com")
        page = client.get("/dashboard/api-keys").get_data(as_text=True)
    assert "<th scope=\"col\">Scopes</th>" in page and "ops:read" in page
    assert "2027-03-10" in page


@pytest.mark.parametrize(
    ("text_", "delta"),
    [("90d", dt.timedelta(days=90)), ("12h", dt.timedelta(hours=12)), ("30m", dt.timedelta(minutes=30))],
)
def test_durations(text_, delta):
    assert parse_duration(text_) == delta


@pytest.mark.parametrize("text_", ["", "0d", "-1d", "90", "90x", "1y", "99999d", "9" * 40])
def test_durations_refused(text_):
    with pytest.raises(ValueError):
        parse_duration(text_)


def test_an_expired_key_answers_401_with_the_reason(app, client, runner):
    with time_machine.travel(NOW, tick=True):
        key = create_key(runner, "quarterly", "--expires-in", "90d")
        headers = {"Authorization": f"Bearer {key}"}
        assert client.get(f"{PAYMENTS}/customers", headers=headers).status_code == 200
        listed = runner.invoke(args=["api-keys", "list"]).output
    assert "2027-03-10" in listed
    with time_machine.travel(NOW + dt.timedelta(days=90, minutes=1), tick=False):
        answer = client.get(f"{PAYMENTS}/customers", headers=headers)
        listed = runner.invoke(args=["api-keys", "list"]).output
    assert answer.status_code == 401
    error = answer.get_json()["error"]
    assert error["code"] == "unauthorized" and error["message"] == "This API key has expired."
    assert "api-keys create" in error["user_action"]
    assert 'error_description="expired key"' in answer.headers["WWW-Authenticate"]
    assert key not in answer.get_data(as_text=True)
    assert listed.rstrip().endswith("expired")


def test_expires_in_is_validated(runner):
    bad = runner.invoke(args=["api-keys", "create", "x", "--expires-in", "forever"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output


# --- the payments health answer ------------------------------------------------------------


def test_anonymous_payments_health_says_only_ok_or_degraded_and_the_version_status(client):
    from kamiyo.versioning.monitor import LIBRARY_API_VERSION, parse_version

    # The library's pinned version is healthy a month after its release, whatever today is.
    released = dt.datetime.combine(parse_version(LIBRARY_API_VERSION).date, dt.time(12), tzinfo=dt.UTC)
    with time_machine.travel(released + dt.timedelta(days=30), tick=True):
        answer = client.get(f"{PAYMENTS}/health")  # Stripe is a closed port in tests: degraded
    assert answer.status_code == 503
    assert answer.get_json() == {"status": "degraded", "api_version": {"status": "healthy"}}


def test_payments_health_detail_needs_ops_read(app, client):
    detail = client.get(f"{PAYMENTS}/health", headers=key_for(app, "ops:read"))
    body = detail.get_json()
    assert detail.status_code == 503
    assert {"stripe", "circuit_breaker", "api_version", "worker"} <= set(body)
    assert body["circuit_breaker"]["consecutive_failures"] == 0
    refused = client.get(f"{PAYMENTS}/health", headers=key_for(app, "payments:read"))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "insufficient_scope"
    wrong = client.get(f"{PAYMENTS}/health", headers={"Authorization": "Bearer kmy_not-a-key"})
    assert wrong.status_code == 401
