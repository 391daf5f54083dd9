"""A subscription create overtaken after Stripe made the subscription answers the operation's
row; a Stripe subscription without a status is stored as `incomplete` (a live one)."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription, utcnow
from kamiyo.payments import subscriptions
from kamiyo.payments.models import PaymentOperation
from tests.payments.workers import API, Stall, in_thread, live_stripe_subscriptions, new_customer
from tests.support import FAST_RETRIES, make_key


def test_a_create_overtaken_after_stripe_made_it_answers_the_operations_subscription(make_app, proxy, localstripe,
                                                                                   plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = f"o-{uuid.uuid4().hex[:10]}"
    customer = new_customer(client, headers, user)
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    # Stripe made the subscription; the worker stalls before storing that, past its lease.
    stall = Stall(app, "create_subscription")
    thread, out = in_thread(lambda: app.test_client().post(f"{API}/subscriptions", headers=headers, json=body))
    assert stall.reached.wait(30)
    with app.app_context():
        db.session.execute(update(PaymentOperation).where(PaymentOperation.user_id == user,
                                                          PaymentOperation.operation == subscriptions.OPERATION)
                           .values(lease_expires_at=utcnow()))
        db.session.commit()
    # The client's retry takes the operation over, replays the create with its key, and finishes it.
    winner = client.post(f"{API}/subscriptions", headers=headers, json=body)
    assert winner.status_code == 201, winner.get_json()
    stall.resume()
    thread.join(30)
    [late] = out
    assert late.status_code == 200, late.get_json()
    assert late.get_json()["id"] == winner.get_json()["id"]
    assert [s["id"] for s in live_stripe_subscriptions(localstripe, customer["stripe_customer_id"])] == [
        winner.get_json()["stripe_subscription_id"]]


def test_a_stripe_subscription_without_a_status_is_stored_incomplete_and_flagged_beside_a_live_one(app):
    with app.app_context():
        ours = Customer(user_id="user-nostatus", email="n@example.com", stripe_customer_id="cus_nostatus")
        db.session.add(ours)
        db.session.flush()
        held = Subscription(customer_id=ours.id, stripe_subscription_id="sub_held", price_id="price_pro", tier="pro",
                            status="active")
        db.session.add(held)
        db.session.flush()
        row_id = subscriptions.store({"id": "sub_nostatus"}, ours.id, "price_pro", "pro")
        db.session.commit()
        row = db.session.get_one(Subscription, row_id)
        assert (row.status, row.duplicate_of, row.stripe_subscription_id) == ("incomplete", held.id, "sub_nostatus")
