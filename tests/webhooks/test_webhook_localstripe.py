"""Real deliveries: localstripe signs and POSTs its events to our live server."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
import stripe
from localstripe import webhooks as localstripe_webhooks

from stripe_signing import SECRET, URL
from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.webhooks.models import PaymentOutcome, WebhookEvent


def create_customer_and_subscription(localstripe_url: str, user_id: str, email: str) -> tuple[str, str]:
    """Make a customer with a paying subscription; returns their Stripe ids.

    Straight on localstripe for now. When the payments API lands this becomes
    POST /api/v1/payments/customers then /subscriptions (which set the same
    `kamiyo_user_id` metadata); the test below stays as it is.
    """
    client = stripe.StripeClient("sk_test_kamiyo_tests", base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    product = client.v1.products.create(params={"name": "Kamiyo Pro"})
    # localstripe has no Prices: a plan stands in (a Stripe plan id also works as a price id).
    plan = client.v1.plans.create(params={"product": product.id, "amount": 1900, "currency": "usd",
                                          "interval": "month", "metadata": {"tier": "pro"}})
    customer = client.v1.customers.create(params={"email": email, "metadata": {"kamiyo_user_id": user_id}})
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subscription = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"plan": plan.id}], "metadata": {"kamiyo_user_id": user_id}})
    return customer.id, subscription.id


@pytest.fixture
def delivering_to(localstripe_url, serve_app):
    """Register our live server's webhook URL with localstripe (unregistered afterwards)."""
    hook_id = f"kamiyo-{uuid.uuid4().hex[:8]}"

    def register(app) -> None:
        url = serve_app(app) + URL
        answer = requests.post(f"{localstripe_url}/_config/webhooks/{hook_id}",
                               data={"url": url, "secret": SECRET}, timeout=5)
        assert answer.status_code == 200

    yield register
    localstripe_webhooks._webhooks.pop(hook_id, None)


def wait_for(check, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_localstripe_events_arrive_verified_and_processed(stripe_app, localstripe_url, delivering_to):
    app = stripe_app
    delivering_to(app)
    customer_id, subscription_id = create_customer_and_subscription(localstripe_url, "user-ls", "ls@example.com")

    def state():
        with app.app_context():
            db.session.rollback()
            types = dict(db.session.execute(db.select(WebhookEvent.type, WebhookEvent.status)).all())
            done = {"customer.created", "customer.updated", "customer.subscription.created"} <= types.keys()
            paid = {"invoice.payment_succeeded", "payment_intent.succeeded"} <= types.keys()
            return (types, paid) if done and paid else None

    result = wait_for(state)
    assert result, "localstripe's events did not all arrive"
    types, _ = result
    assert types["customer.created"] == types["customer.subscription.created"] == "processed"
    assert "failed" not in types.values()
    with app.app_context():
        customer = db.session.scalar(db.select(Customer).where(Customer.stripe_customer_id == customer_id))
        assert (customer.user_id, customer.email) == ("user-ls", "ls@example.com")
        subscription = db.session.scalar(db.select(Subscription))
        assert (subscription.stripe_subscription_id, subscription.customer_id) == (subscription_id, customer.id)
        assert subscription.status == "active" and subscription.tier == "pro"
        # localstripe's invoice names no payment intent: the invoice and the intent are one row each.
        outcomes = db.session.scalars(db.select(PaymentOutcome)).all()
        assert {(o.outcome, o.amount, o.stripe_customer_id) for o in outcomes} == {("succeeded", 1900, customer_id)}
