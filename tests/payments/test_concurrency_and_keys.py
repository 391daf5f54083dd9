"""Concurrent identical requests, the caller's Idempotency-Key, and reconcile."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, select

from kamiyo.api_keys import authenticate
from kamiyo.extensions import db
from kamiyo.models import Customer, utcnow
from kamiyo.payments.client_keys import _fingerprint
from kamiyo.payments.idempotency import derive_key
from kamiyo.payments.models import ClientIdempotencyKey, PaymentOperation
from tests.support import both_databases, stripe_customers_for


@both_databases
def test_twenty_concurrent_identical_creates_make_one_customer(payments_app, auth, serve_app, localstripe):
    base = serve_app(payments_app)
    user = f"race-{uuid.uuid4().hex[:10]}"
    body = {"user_id": user, "email": "race@example.com", "name": "Race"}

    def create(_):
        return requests.post(f"{base}/api/v1/payments/customers", json=body, headers=auth, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(create, range(20)))

    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({r.json()["stripe_customer_id"] for r in responses}) == 1
    assert len(stripe_customers_for(localstripe, user)) == 1
    with payments_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Customer).where(Customer.user_id == user)) == 1
        assert db.session.scalar(select(func.count()).select_from(PaymentOperation)
                                 .where(PaymentOperation.scope == f"customer.create:{user}")) == 1


@both_databases
def test_client_idempotency_key_replays_and_refuses_other_bodies(api):
    key = str(uuid.uuid4())
    body = {"user_id": f"ik-{uuid.uuid4().hex[:8]}", "email": "ik@example.com"}
    first = api.post("/customers", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    again = api.post("/customers", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 201  # the stored response, status included
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()

    other = api.post("/customers", json={**body, "email": "other@example.com"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"

    bad = api.post("/customers", json=body, headers={"Idempotency-Key": "ключ"})
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "idempotency_key_invalid"


@both_databases
def test_client_idempotency_key_in_flight_is_409(api, payments_app, auth):
    body = {"user_id": "inflight-user", "email": "f@example.com"}
    # The first request is still running: its record is in flight (as written before its view runs).
    with payments_app.test_request_context("/api/v1/payments/customers", method="POST", json=body):
        fingerprint = _fingerprint()
    with payments_app.app_context():
        key_row = authenticate(auth["Authorization"].split()[1])
        db.session.add(ClientIdempotencyKey(api_key_id=key_row.id, key="k-inflight", fingerprint=fingerprint,
                                            status="in_flight", owner_token="first-request",
                                            lease_expires_at=utcnow() + dt.timedelta(minutes=1),
                                            expires_at=utcnow() + dt.timedelta(hours=1)))
        db.session.commit()
    response = api.post("/customers", json=body, headers={"Idempotency-Key": "k-inflight"})
    assert response.status_code == 409 and response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "idempotency_key_in_flight"


def test_stripe_key_is_deterministic_without_dates():
    import time_machine

    params = '{"email":"a@b.co"}'
    with time_machine.travel(dt.datetime(2026, 11, 22, 23, 59, 59, tzinfo=dt.timezone.utc)):
        before_midnight = derive_key("customer.create", "user-1", params, 0)
    with time_machine.travel(dt.datetime(2026, 11, 23, 0, 0, 1, tzinfo=dt.timezone.utc)):
        after_midnight = derive_key("customer.create", "user-1", params, 0)
    assert before_midnight == after_midnight  # a retry across midnight keeps its key
    assert re.fullmatch(r"[0-9a-f]{32}", before_midnight)
    assert before_midnight != derive_key("customer.create", "user-1", params, 1)  # next generation
    assert before_midnight != derive_key("customer.create", "user-1", '{"email":"c@b.co"}', 0)  # other params
    assert before_midnight != derive_key("customer.create", "user-2", params, 0)  # other user


@both_databases
def test_reconcile_adopts_orphaned_stripe_customers(payments_app, localstripe):
    user = f"orphan-{uuid.uuid4().hex[:8]}"
    orphan = localstripe.v1.customers.create(params={"email": "o@example.com", "metadata": {"kamiyo_user_id": user}})
    localstripe.v1.customers.create(params={"email": "not-ours@example.com"})

    result = payments_app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert result.exit_code == 0, result.output
    # localstripe is shared by the session: other tests' customers are orphans of this database too
    # (and some users have two there, by design of their tests: conflicts).
    summary = re.search(r"Scanned (\d+) Stripe customers: (\d+) ours, 0 already known, (\d+) adopted, "
                        r"(\d+) conflicts \(see the log\), 0 in progress", result.output)
    assert summary, result.output
    scanned, ours, adopted, conflicts = map(int, summary.groups())
    assert scanned > ours and ours == adopted + conflicts and adopted >= 1
    with payments_app.app_context():
        row = db.session.scalar(select(Customer).where(Customer.user_id == user))
        assert row is not None and row.stripe_customer_id == orphan.id

    again = payments_app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert "0 adopted" in again.output


@both_databases
def test_daily_purge_drops_expired_keys_and_old_attempt_records(api, payments_app):
    from kamiyo.stripe_gateway.models import StripeCall
    from kamiyo.payments.retention import purge_expired_records

    # A user of its own: localstripe outlives the test (and this test runs once per database).
    assert api.post("/customers", json={"user_id": f"purge-{uuid.uuid4().hex[:8]}", "email": "p@example.com"},
                    headers={"Idempotency-Key": "k-purge"}).status_code == 201
    with payments_app.app_context():
        assert purge_expired_records() == {"client_idempotency_keys": 0, "stripe_calls": 0,
                                           "operation_params_cleared": 0}
        later = utcnow() + dt.timedelta(days=31)
        assert purge_expired_records(later) == {"client_idempotency_keys": 1, "stripe_calls": 1,
                                                "operation_params_cleared": 1}
        assert db.session.scalar(select(func.count()).select_from(StripeCall)) == 0
        assert db.session.scalar(select(func.count()).select_from(PaymentOperation)) == 1  # the guard stays
