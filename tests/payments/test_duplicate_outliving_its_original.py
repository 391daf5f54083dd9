"""a subscription flagged as a duplicate stays flagged after the one it duplicated is
cancelled, so it no longer holds its customer and price, and our API subscribes the customer a
second time while it is still live on Stripe."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Subscription
from tests.payments.workers import API, live_stripe_subscriptions, new_customer
from tests.support import FAST_RETRIES, both_databases, make_key
from tests.webhooks.stripe_signing import make_event, post

SUBSCRIPTIONS = f"{API}/subscriptions"


@both_databases
def test_a_duplicate_that_survives_its_original_still_holds_the_customer_and_price(make_app, proxy, localstripe,
                                                                                  plan_id):
    """Sequence:

    1. POST /subscriptions makes O (ours, active).
    2. Support creates R for the same customer and price in the Stripe dashboard (no Kamiyo
       metadata). Its customer.subscription.created is stored flagged: R.duplicate_of = O.
    3. To resolve the double billing, the customer's O is cancelled (POST .../O/cancel);
       R is the one that stays. R's next event (customer.subscription.updated) is applied.
    4. The client asks again for the customer's subscription to this price (POST /subscriptions).

    Stripe now holds exactly one live subscription for the customer and price: R. But R's
    `duplicate_of` is never cleared (the UPDATE in webhooks/handlers._subscription_update keeps it,
    and _apply_as_duplicate is only reached when the UPDATE did not match), so
    models.live_subscription() skips R, the operation is reopened (its result O is cancelled) and
    subscriptions._adopted() only adopts subscriptions carrying our kamiyo_customer_id metadata:
    a new subscription is created. The customer is billed twice (R and the new one).
    """
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"rt-{uuid.uuid4().hex[:10]}")
    stripe_customer = customer["stripe_customer_id"]
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    original = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert original.status_code == 201, original.get_json()
    original = original.get_json()

    # Made in the Stripe dashboard, behind our back, without our metadata.
    second = localstripe.v1.subscriptions.create(params={"customer": stripe_customer,
                                                         "items": [{"plan": plan_id}]}).to_dict()
    assert post(client, make_event("customer.subscription.created", second)).status_code == 200
    with app.app_context():
        flagged = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == second["id"]))
        assert flagged.duplicate_of == original["id"]

    # The original goes; the dashboard one stays, and its next event arrives.
    cancelled = client.post(f"{SUBSCRIPTIONS}/{original['id']}/cancel", headers=headers)
    assert cancelled.get_json()["status"] == "canceled"
    now = localstripe.v1.subscriptions.retrieve(second["id"]).to_dict()
    assert post(client, make_event("customer.subscription.updated", now)).status_code == 200
    assert [s["id"] for s in live_stripe_subscriptions(localstripe, stripe_customer)] == [second["id"]]
    with app.app_context():  # it holds the customer and price now: no longer a duplicate of a cancelled one
        assert db.session.scalar(select(Subscription.duplicate_of).where(
            Subscription.stripe_subscription_id == second["id"])) is None

    again = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert again.status_code in (200, 201), again.get_json()
    live = [s["id"] for s in live_stripe_subscriptions(localstripe, stripe_customer)]
    assert live == [second["id"]], f"a second live subscription was made while {second['id']} is live: {live}"
