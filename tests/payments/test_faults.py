"""Retries, lost replies, restarts and outages, against localstripe through the
emulator proxy (real HTTP, real Stripe idempotency semantics)."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.payments.models import PaymentOperation
from kamiyo.stripe_gateway.models import StripeCall
from tests.support import FAST_RETRIES, LEASE_SECONDS, SHORT_LEASE, both_databases, make_key, stripe_customers_for

CUSTOMERS = r"^/v1/customers$"


def body():
    return {"user_id": f"u-{uuid.uuid4().hex[:10]}", "email": "f@example.com", "name": "Fault"}


def test_fail_twice_then_succeed_uses_one_key_on_three_attempts(api, proxy, payments_app, caplog):
    proxy.add_faults(Fault("status", 503, path=CUSTOMERS), Fault("drop_before", path=CUSTOMERS))
    with caplog.at_level("WARNING", logger="kamiyo.stripe_gateway.retry"):
        response = api.post("/customers", json=body())
    assert response.status_code == 201, response.get_json()
    attempts = proxy.requests_to("POST", CUSTOMERS)
    assert len(attempts) == 3
    keys = {r.idempotency_key for r in attempts}
    assert len(keys) == 1 and len(next(iter(keys))) == 32
    assert [r.outcome for r in attempts] == ["fault:status", "fault:drop_before", "forwarded"]
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == 2
    with payments_app.app_context():
        calls = db.session.scalars(select(StripeCall).where(StripeCall.operation == "customer.create")).all()
    assert [(c.attempt, c.outcome, c.http_status) for c in calls] == [
        (1, "error", 503), (2, "error", None), (3, "success", 200)]
    assert calls[-1].stripe_request_id.startswith("req_")
    assert calls[0].idempotency_key_prefix == next(iter(keys))[:8]


def test_card_error_is_one_attempt_with_a_safe_message(api, proxy):
    proxy.add_faults(Fault("status", 402, path=CUSTOMERS))
    response = api.post("/customers", json=body())
    assert response.status_code == 402
    error = response.get_json()["error"]
    assert error["code"] == "card_declined" and "declined" in error["message"]
    assert len(proxy.requests_to("POST", CUSTOMERS)) == 1


def test_stripe_should_retry_false_is_not_retried(api, proxy):
    proxy.add_faults(Fault("status", 429, should_retry=False, path=CUSTOMERS))
    response = api.post("/customers", json=body())
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "rate_limited"
    assert len(proxy.requests_to("POST", CUSTOMERS)) == 1


def test_rate_limit_with_should_retry_true_is_retried(api, proxy):
    proxy.add_faults(Fault("status", 429, should_retry=True, path=CUSTOMERS))
    assert api.post("/customers", json=body()).status_code == 201
    assert len(proxy.requests_to("POST", CUSTOMERS)) == 2


@both_databases
def test_lost_reply_is_adopted_not_duplicated(api, proxy, localstripe):
    request = body()
    proxy.add_faults(Fault("drop_after", path=CUSTOMERS))
    response = api.post("/customers", json=request)
    assert response.status_code == 201
    attempts = proxy.requests_to("POST", CUSTOMERS)
    assert [r.outcome for r in attempts] == ["fault:drop_after", "replayed"]
    stripe_side = stripe_customers_for(localstripe, request["user_id"])
    assert len(stripe_side) == 1 and stripe_side[0].id == response.get_json()["stripe_customer_id"]


@both_databases
def test_restart_after_stripe_created_it_adopts_with_the_same_key(make_app, proxy, localstripe):
    # The first process gives up (its only attempt lost the reply) ...
    first = make_app(STRIPE_API_BASE=proxy.url, **{**FAST_RETRIES, "STRIPE_RETRY_ATTEMPTS": 1})
    headers = make_key(first)
    request = body()
    proxy.add_faults(Fault("drop_after", path=CUSTOMERS))
    failed = first.test_client().post("/api/v1/payments/customers", json=request, headers=headers)
    assert failed.status_code == 503
    # ... and a fresh process on the same database resumes the claimed operation.
    second = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    resumed = second.test_client().post("/api/v1/payments/customers", json=request, headers=headers)
    assert resumed.status_code == 201
    attempts = proxy.requests_to("POST", CUSTOMERS)
    assert [r.outcome for r in attempts] == ["fault:drop_after", "replayed"]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key
    assert len(stripe_customers_for(localstripe, request["user_id"])) == 1


@both_databases
def test_process_died_mid_call_is_resumed_after_the_lease(make_app, proxy, localstripe):
    from kamiyo.payments import phases
    from kamiyo.stripe_gateway.gateway import get_gateway

    app = make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)
    headers = make_key(app)
    request = body()
    # A worker claimed the operation, reached Stripe (the customer exists there), then died:
    # its claim is still "pending" with its lease running, and no row was written.
    params = {"email": request["email"], "metadata": {"kamiyo_user_id": request["user_id"]}, "name": request["name"]}
    with app.app_context():
        claim = phases.acquire("customer.create", f"customer.create:{request['user_id']}",
                               request["user_id"], params, "dead-worker")
        key = claim.run.key
        get_gateway().create_customer(params, key)
    # While its lease runs, an identical request waits, then gets 409 (never a second Stripe call).
    busy = app.test_client().post("/api/v1/payments/customers", json=request, headers=headers)
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "operation_in_progress"
    time.sleep(LEASE_SECONDS + 0.1)
    resumed = app.test_client().post("/api/v1/payments/customers", json=request, headers=headers)
    assert resumed.status_code == 201
    attempts = proxy.requests_to("POST", CUSTOMERS)
    assert [r.outcome for r in attempts] == ["forwarded", "replayed"]
    assert attempts[0].idempotency_key == attempts[1].idempotency_key == key
    assert len(stripe_customers_for(localstripe, request["user_id"])) == 1


@both_databases
def test_permanent_failure_bumps_the_generation(api, proxy, payments_app):
    request = body()
    proxy.add_faults(Fault("status", 400, error_type="invalid_request_error", path=CUSTOMERS))
    rejected = api.post("/customers", json=request)
    assert rejected.status_code == 400
    assert rejected.get_json()["error"]["code"] == "invalid_payment_request"
    accepted = api.post("/customers", json=request)
    assert accepted.status_code == 201
    first, second = proxy.requests_to("POST", CUSTOMERS)
    assert first.idempotency_key != second.idempotency_key
    with payments_app.app_context():
        op = db.session.scalar(select(PaymentOperation))
        assert (op.generation, op.status) == (1, "succeeded")


def test_breaker_opens_fails_fast_and_closes_after_a_probe(make_app, proxy):
    app = make_app(STRIPE_API_BASE=proxy.url, BREAKER_FAIL_MAX=2, BREAKER_RESET_TIMEOUT=0.5, **FAST_RETRIES)
    headers = make_key(app)
    client = app.test_client()
    proxy.add_faults(*[Fault("status", 503, path=CUSTOMERS) for _ in range(6)])
    for _ in range(2):  # Stripe's 5xx after three attempts each: a bad gateway
        assert client.post("/api/v1/payments/customers", json=body(), headers=headers).status_code == 502
    assert len(proxy.requests_to("POST", CUSTOMERS)) == 6

    blocked = client.post("/api/v1/payments/customers", json=body(), headers=headers)
    assert blocked.status_code == 503
    assert blocked.get_json()["error"]["code"] == "payment_service_unavailable"
    assert len(proxy.requests_to("POST", CUSTOMERS)) == 6  # no Stripe call while open

    time.sleep(0.6)
    probe = client.post("/api/v1/payments/customers", json=body(), headers=headers)
    assert probe.status_code == 201
    assert client.get("/api/v1/payments/health", headers=headers).get_json()["circuit_breaker"]["state"] == "closed"
    assert client.post("/api/v1/payments/customers", json=body(), headers=headers).status_code == 201
