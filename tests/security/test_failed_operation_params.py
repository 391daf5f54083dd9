"""A failed payment operation's parameters (email, name, payment method) are cleared once its
window has passed, like a succeeded one's; reconcile and a repeated create still do the right
thing with it (no crash, no second customer)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import select, update

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import Customer, utcnow
from kamiyo.payments import phases
from kamiyo.payments.models import PaymentOperation
from kamiyo.payments.reconcile import reconcile_customers
from kamiyo.payments.retention import purge_expired_records
from tests.support import FAST_RETRIES, both_databases, make_key, stripe_customers_for

pytestmark = both_databases

CUSTOMERS = "/api/v1/payments/customers"
EMAIL = "refused.person@mail.example"


@pytest.fixture
def failed(make_app, proxy):
    """An app, its key, and a user whose customer create Stripe refused (a failed operation)."""
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, user = make_key(app), f"fo-{uuid.uuid4().hex[:10]}"
    body = {"user_id": user, "email": EMAIL, "name": "Refused Person"}
    proxy.add_faults(Fault("status", 400, error_type="invalid_request_error", path=r"^/v1/customers$"))
    answer = app.test_client().post(CUSTOMERS, headers=headers, json=body)
    assert answer.status_code == 400, answer.get_json()
    with app.app_context():
        op = operation(user)
        assert op.status == "failed" and EMAIL in op.params_json
    return app, headers, user, body


def operation(user: str) -> PaymentOperation:
    op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == f"customer.create:{user}"))
    assert op is not None
    return op


def clear(app, user: str) -> None:
    """The daily purge, run a day and a minute after the failure."""
    with app.app_context():
        updated_at = operation(user).updated_at
        purge_expired_records(utcnow() + dt.timedelta(hours=24, minutes=1))
        db.session.expire_all()
        op = operation(user)
        assert (op.status, op.params_json, op.updated_at) == ("failed", "{}", updated_at)
        db.session.rollback()


def test_a_failed_operation_keeps_its_parameters_for_the_window_then_loses_them(failed):
    app, _, user, _ = failed
    with app.app_context():
        purge_expired_records(utcnow() + dt.timedelta(hours=23))
        db.session.expire_all()
        assert EMAIL in operation(user).params_json  # within the window: kept
        purge_expired_records(utcnow() + dt.timedelta(days=90))
        db.session.expire_all()
        kept = operation(user).params_json
    assert EMAIL not in kept and kept == "{}", f"a failed operation keeps its parameters 90 days on: {kept}"


def test_a_repeated_create_after_the_parameters_were_cleared_makes_one_customer(failed, proxy, localstripe):
    app, headers, user, body = failed
    clear(app, user)
    client = app.test_client()
    created = client.post(CUSTOMERS, headers=headers, json=body)
    assert created.status_code == 201, created.get_json()
    again = client.post(CUSTOMERS, headers=headers, json=body)
    assert again.status_code == 200 and again.get_json()["id"] == created.get_json()["id"]
    assert len(stripe_customers_for(localstripe, user)) == 1
    with app.app_context():
        op = operation(user)
        # Taken over with the new request's parameters.
        assert op.status == "succeeded" and json.loads(op.params_json)["email"] == EMAIL


def test_reconcile_adopts_the_customer_of_a_failed_operation_whose_parameters_were_cleared(
    failed, proxy, localstripe
):
    app, headers, user, body = failed
    clear(app, user)
    # A customer of ours exists on Stripe all the same (a worker we lost track of made it).
    made = localstripe.v1.customers.create(params={"email": EMAIL, "name": body["name"], "metadata": {"kamiyo_user_id": user}})
    result = app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert result.exit_code == 0 and "0 adopted" not in result.output, result.output  # localstripe is shared
    with app.app_context():
        row = db.session.scalar(select(Customer).where(Customer.user_id == user))
        assert row is not None and row.stripe_customer_id == made.id
        assert operation(user).status == "succeeded"
    proxy.clear_requests()
    again = app.test_client().post(CUSTOMERS, headers=headers, json=body)
    assert again.status_code == 200 and again.get_json()["stripe_customer_id"] == made.id
    assert proxy.requests_to("POST", r"^/v1/customers$") == []
    assert len(stripe_customers_for(localstripe, user)) == 1


def test_a_reconcile_that_stops_after_taking_over_a_cleared_operation_is_resumed(
    failed, proxy, localstripe, monkeypatch
):
    """Reconcile took the operation over, then its process died before storing anything: the
    request that resumes it (its lease over) has parameters to send, and makes no second customer."""
    app, headers, user, body = failed
    clear(app, user)
    made = localstripe.v1.customers.create(params={"email": EMAIL, "name": body["name"], "metadata": {"kamiyo_user_id": user}})

    def dies(*args, **kwargs):
        raise RuntimeError("the reconcile process died")

    with app.app_context(), monkeypatch.context() as patch:
        patch.setattr(phases, "atomic_phase", dies)
        with pytest.raises(RuntimeError):
            reconcile_customers()
        db.session.rollback()
        db.session.execute(update(PaymentOperation).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
        assert operation(user).status == "pending"  # taken over, nothing stored
    proxy.clear_requests()
    resumed = app.test_client().post(CUSTOMERS, headers=headers, json=body)
    assert resumed.status_code in (200, 201), resumed.get_json()
    assert resumed.get_json()["stripe_customer_id"] == made.id
    assert proxy.requests_to("POST", r"^/v1/customers$") == []
    assert len(stripe_customers_for(localstripe, user)) == 1


def test_a_declined_subscription_is_charged_once_when_repeated_after_its_parameters_were_cleared(
    make_app, proxy, localstripe, plan_id
):
    from tests.payments.workers import live_stripe_subscriptions, new_customer

    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"fs-{uuid.uuid4().hex[:10]}")
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    proxy.add_faults(Fault("status", 402, path=r"^/v1/subscriptions$"))
    declined = client.post("/api/v1/payments/subscriptions", json=body, headers=headers)
    assert declined.status_code == 402, declined.get_json()
    scope = f"subscription.create:{customer['id']}:{plan_id}"
    with app.app_context():
        purge_expired_records(utcnow() + dt.timedelta(hours=24, minutes=1))
        op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == scope))
        assert (op.status, op.params_json) == ("failed", "{}")
    made = client.post("/api/v1/payments/subscriptions", json=body, headers=headers)
    assert made.status_code == 201, made.get_json()
    again = client.post("/api/v1/payments/subscriptions", json=body, headers=headers)
    assert again.status_code == 200 and again.get_json()["id"] == made.get_json()["id"]
    live = live_stripe_subscriptions(localstripe, customer["stripe_customer_id"])
    assert [s["id"] for s in live] == [made.get_json()["stripe_subscription_id"]]
