"""The caller's Idempotency-Key, held by the request that owns the operation: a slow first
request and its retry never both store an answer, and nothing answers 500."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from sqlalchemy import delete, select

from kamiyo.extensions import db
from kamiyo.payments.models import ClientIdempotencyKey
from tests.support import LEASE_SECONDS, SHORT_LEASE, both_databases, make_key, stripe_customers_for
from tests.payments.workers import API, Stall, in_thread

pytestmark = both_databases

CUSTOMERS = f"{API}/customers"


@pytest.fixture
def workers(make_app, proxy):
    return make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE), make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)


def _request():
    user = f"k-{uuid.uuid4().hex[:10]}"
    return {"user_id": user, "email": f"{user}@example.com"}, {"Idempotency-Key": str(uuid.uuid4())}


def test_a_retry_while_the_first_request_owns_its_operation_is_409(workers, localstripe):
    w1, w2 = workers
    auth = make_key(w1)
    body, key = _request()
    stall = Stall(w1, "create_customer")
    thread, answers = in_thread(lambda: w1.test_client().post(CUSTOMERS, json=body, headers={**auth, **key}))
    assert stall.reached.wait(10)
    busy = w2.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "idempotency_key_in_flight"
    stall.resume()
    thread.join(30)
    assert answers[0].status_code == 201
    replay = w2.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json() == answers[0].get_json()


def test_a_retry_after_the_first_lost_its_lease_answers_once_and_the_first_stores_nothing_over_it(
        workers, localstripe):
    w1, w2 = workers
    auth = make_key(w1)
    body, key = _request()
    stall = Stall(w1, "create_customer")  # Stripe made the customer; the first request stalls
    thread, answers = in_thread(lambda: w1.test_client().post(CUSTOMERS, json=body, headers={**auth, **key}))
    assert stall.reached.wait(10)
    time.sleep(LEASE_SECONDS + 0.2)
    retry = w2.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert retry.status_code == 201, retry.get_json()  # taken over: resumed with the same Stripe key
    stall.resume()
    thread.join(30)
    [first] = answers
    assert first.status_code == 200 and first.get_json()["id"] == retry.get_json()["id"]  # the result, no 500
    replay = w1.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert replay.status_code == 201 and replay.get_json() == retry.get_json()  # the retry's answer stands
    assert len(stripe_customers_for(localstripe, body["user_id"])) == 1


def test_a_record_gone_while_its_request_runs_is_no_500(workers, localstripe):
    w1, _ = workers
    auth = make_key(w1)
    body, key = _request()
    stall = Stall(w1, "create_customer")
    thread, answers = in_thread(lambda: w1.test_client().post(CUSTOMERS, json=body, headers={**auth, **key}))
    assert stall.reached.wait(10)
    with w1.app_context():  # purged meanwhile (expired, by the daily job)
        db.session.execute(delete(ClientIdempotencyKey))
        db.session.commit()
    stall.resume()
    thread.join(30)
    assert answers[0].status_code == 201
    with w1.app_context():
        assert db.session.scalars(select(ClientIdempotencyKey)).all() == []


def test_a_record_in_flight_whose_request_died_is_taken_over(workers, localstripe):
    w1, w2 = workers
    auth = make_key(w1)
    body, key = _request()
    first = w1.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert first.status_code == 201
    with w1.app_context():  # as if the process died before storing its answer
        record = db.session.scalar(select(ClientIdempotencyKey))
        record.status, record.response_body, record.response_status = "in_flight", None, None
        record.lease_expires_at = record.created_at - dt.timedelta(seconds=1)
        db.session.commit()
    again = w2.test_client().post(CUSTOMERS, json=body, headers={**auth, **key})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
