"""The pages show what the database holds, the admin actions work, and the JSON twins agree."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.scheduler.models import JobRun
from kamiyo.stripe_gateway.models import StripeCall
from kamiyo.webhooks.models import RateLimitViolation, WebhookEvent
from tests.support import both_databases, csrf_token, login, make_key, make_user

pytestmark = both_databases


@pytest.fixture
def admin_client(app):
    make_user(app, "admin@example.com", "admin")
    client = app.test_client()
    login(client, "admin@example.com")
    return client


def _event(event_id: str, status: str, minutes_ago: float, type_: str = "kamiyo.unknown_type") -> WebhookEvent:
    now = utcnow() - dt.timedelta(minutes=minutes_ago)
    payload = {"id": event_id, "type": type_, "created": int(now.timestamp()), "livemode": False,
               "data": {"object": {"id": "obj_1", "object": "thing", "note": "card 4242 4242 4242 4242"}}}
    return WebhookEvent(event_id=event_id, type=type_, created=now, received_at=now, status=status,
                        attempts=1, payload=json.dumps(payload), last_error="boom" if status == "failed" else None)


@pytest.fixture
def seeded(app):
    now = utcnow()
    with app.app_context():
        for i in range(7):  # 3 calls: one clean, one retried twice, one failed; plus 2 older than a day
            db.session.add(StripeCall(operation="customer.create", attempt=1, outcome="success",
                                      request_id=f"req-{i}", created_at=now - dt.timedelta(minutes=i)))
        db.session.add(StripeCall(operation="subscription.create", attempt=1, outcome="error",
                                  error_type="APIConnectionError", request_id="req-r", idempotency_key_prefix="k1",
                                  created_at=now - dt.timedelta(minutes=3)))
        db.session.add(StripeCall(operation="subscription.create", attempt=2, outcome="error",
                                  error_type="RateLimitError", request_id="req-r", idempotency_key_prefix="k1",
                                  created_at=now - dt.timedelta(minutes=2)))
        db.session.add(StripeCall(operation="subscription.create", attempt=3, outcome="success",
                                  request_id="req-r", idempotency_key_prefix="k1",
                                  created_at=now - dt.timedelta(minutes=1)))
        db.session.add(StripeCall(operation="customer.create", attempt=1, outcome="success",
                                  created_at=now - dt.timedelta(days=2)))
        db.session.add_all([_event("evt_ok_1", "processed", 5), _event("evt_ok_2", "processed", 50),
                            _event("evt_failed", "failed", 10), _event("evt_old", "processed", 60 * 30)])
        for i in range(4):
            db.session.add(RateLimitViolation(client_ip="203.0.113.9" if i < 3 else "198.51.100.7",
                                              user_agent="Stripe/1.0", endpoint="/api/v1/webhooks/stripe",
                                              limit="30 per 1 minute", occurred_at=now - dt.timedelta(minutes=i)))
        db.session.commit()


def _number(html: str, element_id: str) -> int:
    found = re.search(rf'id="{element_id}">(\d+)<', html)
    assert found, element_id
    return int(found.group(1))


def test_the_stripe_calls_page_counts_what_the_table_holds(admin_client, seeded):
    html = admin_client.get("/dashboard/stripe-calls").get_data(as_text=True)
    assert (_number(html, "attempts-total"), _number(html, "errors-total"), _number(html, "retries-total")) == (10, 2, 2)
    assert html.count("retry 1") == 1 and html.count("retry 2") == 1
    assert "<svg" in html and "first attempts (8)" in html and "retries (2)" in html
    filtered = admin_client.get("/dashboard/stripe-calls?outcome=error").get_data(as_text=True)
    assert filtered.count('class="badge error"') == 2
    assert "customer.create" not in filtered.split("<table", 1)[1]
    week = admin_client.get("/dashboard/stripe-calls?range=7d").get_data(as_text=True)
    assert _number(week, "attempts-total") == 11


def test_the_webhooks_page_and_an_events_detail(admin_client, seeded):
    html = admin_client.get("/dashboard/webhooks").get_data(as_text=True)
    assert (_number(html, "events-processed"), _number(html, "events-failed")) == (2, 1)
    assert "evt_old" not in html
    assert "evt_old" in admin_client.get("/dashboard/webhooks?range=7d").get_data(as_text=True)
    only_failed = admin_client.get("/dashboard/webhooks?status=failed").get_data(as_text=True)
    assert "evt_failed" in only_failed and "evt_ok_1" not in only_failed
    detail = admin_client.get("/dashboard/webhooks/evt_failed").get_data(as_text=True)
    assert "boom" in detail and "/dashboard/confirm/replay-webhook?target=evt_failed" in detail
    assert "4242 4242 4242 4242" not in detail  # the payload is shown sanitised
    assert admin_client.get("/dashboard/webhooks/evt_nope").status_code == 404


def test_the_rate_limit_page_ranks_clients(admin_client, seeded):
    html = admin_client.get("/dashboard/rate-limits").get_data(as_text=True)
    assert _number(html, "violations-total") == 4
    assert re.search(r"203\.0\.113\.9</a></td><td>3<", html)
    assert re.search(r"198\.51\.100\.7</a></td><td>1<", html)
    one = admin_client.get("/dashboard/rate-limits?client_ip=198.51.100.7").get_data(as_text=True)
    assert one.split("<h2>Latest</h2>", 1)[1].count("198.51.100.7") == 2  # the filter box and one row


def test_pages_follow_their_cursor_without_losing_or_repeating_rows(app, admin_client):
    with app.app_context():
        db.session.add_all([StripeCall(operation=f"op-{i:03}", attempt=1, outcome="success") for i in range(120)])
        db.session.commit()
    seen, url = [], "/dashboard/stripe-calls"
    while url:
        html = admin_client.get(url).get_data(as_text=True)
        seen += re.findall(r"<td>(op-\d{3})</td>", html)
        found = re.search(r'href="([^"]+)" rel="next"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert sorted(seen) == [f"op-{i:03}" for i in range(120)]
    assert len(seen) == 120


@pytest.mark.parametrize("query", ["range=2y", "outcome=maybe", "before=abc", "operation=" + "x" * 300,
                                   "operation=a%00b"])
def test_bad_filters_answer_400_not_500(admin_client, query):
    answer = admin_client.get("/dashboard/stripe-calls?" + query)
    assert answer.status_code == 400
    assert "Traceback" not in answer.get_data(as_text=True)


def _act(client, name: str, target: str = ""):
    page = client.get(f"/dashboard/confirm/{name}" + (f"?target={target}" if target else ""))
    assert page.status_code == 200
    return client.post(f"/dashboard/actions/{name}", data={"target": target, "csrf_token": csrf_token(page.get_data(as_text=True))})


def test_replaying_a_failed_event_with_its_button(app, admin_client, seeded):
    answer = _act(admin_client, "replay-webhook", "evt_failed")
    assert answer.headers["Location"] == "/dashboard/webhooks/evt_failed"
    with app.app_context():
        row = db.session.scalar(db.select(WebhookEvent).filter_by(event_id="evt_failed"))
        assert (row.status, row.attempts) == ("ignored", 2)
    again = _act(admin_client, "replay-webhook", "evt_failed")
    assert "not replayed: the event is ignored now" in admin_client.get(again.headers["Location"]).get_data(as_text=True)
    audit = admin_client.get("/dashboard/audit").get_data(as_text=True)
    assert audit.count("replay-webhook") == 2 and "refused" in audit


def test_creating_a_key_shows_it_once_and_revoking_it_locks_it_out(app, admin_client):
    page = admin_client.get("/dashboard/api-keys").get_data(as_text=True)
    confirm = admin_client.post("/dashboard/api-keys/new", data={"name": "billing", "csrf_token": csrf_token(page)})
    assert "Create an API key?" in confirm.get_data(as_text=True)
    with app.app_context():
        from kamiyo.api_keys import list_api_keys

        assert list_api_keys() == []  # the confirmation page creates nothing
    created = admin_client.post("/dashboard/actions/create-api-key",
                                data={"name": "billing", "csrf_token": csrf_token(confirm.get_data(as_text=True))})
    key = re.search(r'id="new-key" tabindex="0">(kmy_[^<]+)<', created.get_data(as_text=True)).group(1)
    assert created.headers["Cache-Control"] == "no-store"
    bearer = {"Authorization": f"Bearer {key}"}
    assert admin_client.get("/api/v1/ops/summary", headers=bearer).status_code == 200
    assert key not in admin_client.get("/dashboard/api-keys").get_data(as_text=True)
    with app.app_context():
        (row,) = list_api_keys()
    _act(admin_client, "revoke-api-key", str(row.id))
    assert admin_client.get("/api/v1/ops/summary", headers=bearer).status_code == 401
    audit = admin_client.get("/dashboard/audit").get_data(as_text=True)
    assert "create-api-key" in audit and "revoke-api-key" in audit


def test_resetting_the_breaker_closes_it_and_is_recorded(app, admin_client):
    import time

    with app.app_context():
        from kamiyo.stripe_gateway.gateway import get_gateway

        breaker = get_gateway().breaker
        breaker._state.open(time.time())
        breaker._changed("closed", "open")
    assert 'id="breaker-state">open<' in admin_client.get("/dashboard/breaker").get_data(as_text=True)
    _act(admin_client, "reset-breaker")
    html = admin_client.get("/dashboard/breaker").get_data(as_text=True)
    assert 'id="breaker-state">closed<' in html
    assert "<td>open</td><td>closed</td><td>admin@example.com</td>" in html
    assert "<td>closed</td><td>open</td><td>stripe</td>" in html


def test_running_a_job_now_leaves_its_own_run(app, admin_client):
    _act(admin_client, "run-job", "job-runs-prune")
    with app.app_context():
        (run,) = db.session.scalars(db.select(JobRun).filter_by(job="job-runs-prune"))
    assert run.period.startswith("manual:") and run.status == "ok"
    html = admin_client.get("/dashboard/jobs").get_data(as_text=True)
    assert run.period in html
    assert _act(admin_client, "run-job", "no-such-job").status_code == 302
    assert "no job named" in admin_client.get("/dashboard/audit").get_data(as_text=True)


def test_the_json_twins_give_the_pages_numbers(app, admin_client, seeded):
    key = make_key(app)
    summary = admin_client.get("/api/v1/ops/summary", headers=key).json
    overview = admin_client.get("/dashboard/").get_data(as_text=True)
    assert summary["stripe_calls_24h"] == {"attempts": 10, "errors": 2, "retries": 2, "error_rate": 0.2,
                                           "retry_rate": 0.2}
    assert summary["rate_limit_violations_24h"] == 4
    assert summary["webhooks"]["failed"] == 1
    assert "2 errors in 10 attempts" in overview and "2 retries in 10 attempts" in overview
    calls = admin_client.get("/api/v1/ops/stripe-calls?outcome=error", headers=key).json
    assert [row["error_type"] for row in calls["data"]] == ["RateLimitError", "APIConnectionError"]
    events = admin_client.get("/api/v1/ops/webhook-events?status=failed", headers=key).json
    assert [row["event_id"] for row in events["data"]] == ["evt_failed"]
    violations = admin_client.get("/api/v1/ops/rate-limit-violations?client_ip=203.0.113.9", headers=key).json
    assert len(violations["data"]) == 3
    jobs = admin_client.get("/api/v1/ops/jobs", headers=key).json
    assert {"job-runs-prune", "payments-reconcile", "stripe-version-check"} <= {j["name"] for j in jobs["data"]}
    assert admin_client.get("/api/v1/ops/stripe-calls?range=1y", headers=key).status_code == 400


def test_revoking_a_revoked_key_is_refused_not_ok(app, admin_client):
    with app.app_context():
        from kamiyo.api_keys import create_api_key

        key, _ = create_api_key("old")
        key_id = key.id
    _act(admin_client, "revoke-api-key", str(key_id))
    _act(admin_client, "revoke-api-key", str(key_id))
    _act(admin_client, "revoke-api-key", "²")
    html = admin_client.get("/dashboard/audit").get_data(as_text=True)
    outcomes = re.findall(r'<td>revoke-api-key</td><td>[^<]*</td><td><span class="badge (\w+)">', html)
    assert outcomes == ["failed", "refused", "ok"]  # newest first
    assert "was already revoked" in html
