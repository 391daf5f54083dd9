"""Stripe's `paused` status (a trial that ended without a payment method, resumed when
one is added) is not in LIVE_SUBSCRIPTION_STATUSES.

localstripe cannot pause a subscription: the pause is told to us by signed events, as Stripe
would send them, about a subscription that exists (active) in the emulator.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Subscription
from kamiyo.webhooks.models import WebhookEvent
from tests.payments.workers import API, new_customer
from tests.support import FAST_RETRIES, both_databases, make_key
from tests.webhooks.stripe_signing import make_event, post

SUBSCRIPTIONS = f"{API}/subscriptions"


def _setup(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"rt-{uuid.uuid4().hex[:10]}")
    stripe_id = customer["stripe_customer_id"]
    localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    localstripe.v1.customers.update(stripe_id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    # R: the customer's subscription to this price (a trial made at checkout), on Stripe.
    made = localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": plan_id}],
        "metadata": {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}}).to_dict()
    return app, headers, client, customer, made


@both_databases
def test_a_paused_subscription_still_holds_its_customer_and_price(make_app, proxy, localstripe, plan_id):
    """Sequence: the customer's subscription R to price P is `paused` (its trial ended without a
    payment method; events tell us so). The client POSTs /subscriptions for the same customer
    and P. models.live_subscription() skips R (paused is not a live status) and
    subscriptions._adopted() would skip it too, so a second subscription is created on Stripe.
    When the customer adds a card, R resumes: two live subscriptions, billed twice.
    """
    app, headers, client, customer, made = _setup(make_app, proxy, localstripe, plan_id)
    paused = make_event("customer.subscription.updated", {**made, "status": "paused"})
    assert post(client, paused).get_json() == {"status": "processed"}
    proxy.clear_requests()

    answer = client.post(SUBSCRIPTIONS, json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro",
                                               "payment_method": "pm_card_visa"}, headers=headers)
    assert proxy.requests_to("POST", r"^/v1/subscriptions$") == [], (
        f"a second subscription was created for a customer whose {made['id']} is paused: "
        f"{answer.status_code} {answer.get_json()}")


@both_databases
def test_a_same_second_tie_that_revives_a_second_live_subscription_is_not_a_poison_message(make_app, proxy, localstripe,
                                                                                     plan_id):
    """Sequence:

    1. R (this customer and price) is not live in our rows (incomplete_expired); O, a second
       subscription for the same customer and price, is made live by our API.
    2. R comes back: two customer.subscription.updated of the same second, the first still
       `incomplete_expired`, the second `active`. The second is a tie with different values:
       the inbox stores it `failed` and settles it by fetching R from Stripe (inbox._settle_tie).
    3. Before, handlers.apply_refreshed() set R.status = 'active' without the duplicate check
       of the event path: the commit broke uq_subscriptions_live_customer_price and the
       IntegrityError escaped _settle_tie: HTTP 500 on every delivery, for Stripe's 3 days.
       Now R is stored flagged as a duplicate, and the delivery answered 200.
    """
    app, headers, client, customer, made = _setup(make_app, proxy, localstripe, plan_id)
    assert post(client, make_event("customer.subscription.updated", {**made, "status": "incomplete_expired"},
                                   created=int(time.time()) - 60)).get_json() == {"status": "processed"}
    # O: made by our API while R is not live, for the same customer and price.
    other = client.post(SUBSCRIPTIONS, json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro"},
                        headers=headers)
    assert other.status_code == 201 and other.get_json()["status"] == "active", other.get_json()

    second = int(time.time())
    still_paused = make_event("customer.subscription.updated", {**made, "status": "incomplete_expired"},
                              created=second)
    resumed = make_event("customer.subscription.updated", made, created=second)  # active, as Stripe has it
    assert post(client, still_paused).get_json() == {"status": "processed"}
    answers = [post(client, resumed) for _ in range(3)]  # the delivery and two of Stripe's retries

    statuses = [(a.status_code, (a.get_json().get("error") or {}).get("code")) for a in answers]
    assert [code for code, _ in statuses] == [200, 200, 200], f"every delivery fails: {statuses}"
    with app.app_context():
        row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == made["id"]))
        assert row.status == "active" and row.duplicate_of is not None
        assert db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == resumed["id"])) == \
            "processed"
