"""Real deliveries: localstripe signs and POSTs its events to our live server."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from localstripe import webhooks as localstripe_webhooks

from tests.support import both_databases, make_key
from tests.webhooks.stripe_signing import SECRET, URL
from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.webhooks.models import PaymentOutcome, WebhookEvent


def create_customer_and_subscription(app, plan_id: str, user_id: str, email: str) -> tuple[str, str]:
    """A customer with a paying subscription, made through our payments API; their Stripe ids."""
    client, headers = app.test_client(), make_key(app)
    customer = client.post("/api/v1/payments/customers", json={"user_id": user_id, "email": email}, headers=headers)
    assert customer.status_code == 201, customer.get_json()
    subscription = client.post("/api/v1/payments/subscriptions", headers=headers, json={
        "customer_id": customer.get_json()["id"], "price_id": plan_id, "tier": "pro",
        "payment_method": "pm_card_visa"})
    assert subscription.status_code == 201, subscription.get_json()
    return customer.get_json()["stripe_customer_id"], subscription.get_json()["stripe_subscription_id"]


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


@both_databases
def test_localstripe_events_arrive_verified_and_processed(make_app, proxy, plan_id, delivering_to):
    # Our API talks to localstripe through the emulator proxy (it translates price to plan).
    app = make_app(STRIPE_API_BASE=proxy.url)
    delivering_to(app)
    user_id = f"user-ls-{uuid.uuid4().hex[:6]}"
    customer_id, subscription_id = create_customer_and_subscription(app, plan_id, user_id, "ls@example.com")

    def state():
        with app.app_context():
            db.session.rollback()
            types = dict(db.session.execute(db.select(WebhookEvent.type, WebhookEvent.status)).all())
            done = {"customer.created", "customer.updated", "customer.subscription.created"} <= types.keys()
            paid = {"invoice.payment_succeeded", "payment_intent.succeeded"} <= types.keys()
            ours = db.session.scalar(db.select(db.func.count(PaymentOutcome.id)).where(
                PaymentOutcome.stripe_customer_id == customer_id))
            return (types, paid) if done and paid and ours else None

    result = wait_for(state)
    assert result, "localstripe's events did not all arrive"
    types, _ = result
    assert types["customer.created"] == types["customer.subscription.created"] == "processed"
    assert "failed" not in types.values()
    with app.app_context():
        customer = db.session.scalar(db.select(Customer).where(Customer.stripe_customer_id == customer_id))
        assert (customer.user_id, customer.email) == (user_id, "ls@example.com")
        subscription = db.session.scalar(db.select(Subscription).where(
            Subscription.stripe_subscription_id == subscription_id))
        assert (subscription.stripe_subscription_id, subscription.customer_id) == (subscription_id, customer.id)
        assert subscription.status == "active" and subscription.tier == "pro"
        # localstripe's invoice names its payment intent (as Stripe's did before 2025-03-31):
        # invoice.payment_succeeded and payment_intent.succeeded are one payment, one row.
        outcomes = db.session.scalars(db.select(PaymentOutcome).where(
            PaymentOutcome.stripe_customer_id == customer_id)).all()
        assert [(o.outcome, o.amount, o.stripe_customer_id) for o in outcomes] == [("succeeded", 2900, customer_id)]


@both_databases
def test_webhook_that_beats_our_own_answer_is_completed_not_duplicated(make_app, proxy, plan_id, delivering_to,
                                                                        caplog):
    from devtools.stripe_proxy import Fault

    # Stripe's reply to our subscription create is lost; we retry after 3 s. localstripe
    # delivers customer.subscription.created after 1 s, so its handler stores the row first.
    app = make_app(STRIPE_API_BASE=proxy.url, STRIPE_RETRY_MIN_WAIT=3.0, STRIPE_RETRY_MAX_WAIT=3.0)
    delivering_to(app)
    proxy.add_faults(Fault("drop_after", method="POST", path=r"^/v1/subscriptions$"))
    with caplog.at_level("INFO", logger="kamiyo.payments"):
        _, subscription_id = create_customer_and_subscription(app, plan_id, f"user-race-{uuid.uuid4().hex[:6]}",
                                                              "race@example.com")
    assert any("stored by its webhook first" in r.getMessage() for r in caplog.records)
    with app.app_context():
        event = db.session.scalar(db.select(WebhookEvent).where(
            WebhookEvent.type == "customer.subscription.created", WebhookEvent.object_id == subscription_id))
        assert event is not None and event.status == "processed"
        rows = db.session.scalars(db.select(Subscription).where(
            Subscription.stripe_subscription_id == subscription_id)).all()
        assert [(r.stripe_subscription_id, r.tier, r.price_id) for r in rows] == [(subscription_id, "pro", plan_id)]
