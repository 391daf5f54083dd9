"""A subscription made outside our API (Stripe Checkout, the dashboard) for a customer of ours
whose own event arrives after the subscription's: the subscription is not lost."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from tests.support import FAST_RETRIES, both_databases
from tests.webhooks.stripe_signing import make_event, post

pytestmark = both_databases


def _made_at_checkout(localstripe, plan_id):
    """A customer of ours (kamiyo_user_id) and a subscription without Kamiyo metadata, on Stripe."""
    user = f"checkout-{uuid.uuid4().hex[:8]}"
    customer = localstripe.v1.customers.create(params={"email": f"{user}@example.com",
                                                       "metadata": {"kamiyo_user_id": user}})
    localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    localstripe.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = localstripe.v1.subscriptions.create(params={"customer": customer.id, "items": [{"plan": plan_id}]})
    return user, customer.to_dict(), subscription.to_dict()


def _stored_status(app, stripe_id):
    with app.app_context():
        return db.session.scalar(select(Subscription.status).where(Subscription.stripe_subscription_id == stripe_id))


def test_the_subscription_event_that_came_first_is_stored_once_its_customer_is_linked(make_app, proxy, localstripe,
                                                                                    plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    client = app.test_client()
    user, customer, subscription = _made_at_checkout(localstripe, plan_id)
    first = make_event("customer.subscription.created", subscription)
    assert post(client, first).get_json() == {"status": "ignored"}  # whose? not known yet
    assert post(client, make_event("customer.created", customer)).get_json() == {"status": "processed"}
    assert _stored_status(app, subscription["id"]) == "active"  # fetched from Stripe once the customer was linked
    with app.app_context():
        row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == subscription["id"]))
        assert row.customer.user_id == user and row.price_id == plan_id


def test_when_stripe_cannot_answer_then_reconcile_adopts_it(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    client = app.test_client()
    _, customer, subscription = _made_at_checkout(localstripe, plan_id)
    assert post(client, make_event("customer.subscription.created", subscription)).get_json() == {
        "status": "ignored"}
    proxy.add_faults(Fault("status", 503, method="GET", path=r"^/v1/subscriptions$"))
    assert post(client, make_event("customer.created", customer)).get_json() == {"status": "processed"}
    assert _stored_status(app, subscription["id"]) is None
    with app.app_context():
        assert db.session.scalar(select(Customer.stripe_customer_id).where(
            Customer.stripe_customer_id == customer["id"])) == customer["id"]
    result = app.test_cli_runner().invoke(args=["payments", "reconcile", "--subscriptions"])
    assert "Scanned" in result.output, result.output
    assert _stored_status(app, subscription["id"]) == "active"
