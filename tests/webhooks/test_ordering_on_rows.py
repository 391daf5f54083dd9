"""Ordering kept on each object's row: one read however long its history, same-second ties
settled by asking Stripe (outside any write transaction), deletions kept for good."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import Customer, DeletedStripeCustomer, Subscription
from kamiyo.webhooks.inbox import purge_expired_events
from kamiyo.webhooks.models import WebhookEvent
from tests.support import FAST_RETRIES, both_databases, make_key
from tests.payments.workers import API, Stall, in_thread, new_customer
from tests.webhooks.stripe_signing import customer, make_event, post, subscription

pytestmark = both_databases

T0 = 1_800_000_000


@pytest.fixture
def live(make_app, proxy, plan_id):
    """An app on the emulator, a customer and an active subscription made through our API."""
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    made = new_customer(client, headers, f"o-{uuid.uuid4().hex[:10]}")
    sub = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": made["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}).get_json()
    proxy.clear_requests()
    return app, client, made, sub


def _status(app, stripe_id: str) -> str:
    with app.app_context():
        return db.session.scalar(select(Subscription.status).where(Subscription.stripe_subscription_id == stripe_id))


def _stripe_subscription(localstripe, stripe_id: str) -> dict:
    return localstripe.v1.subscriptions.retrieve(stripe_id).to_dict()


@pytest.mark.parametrize("order", ["newer_first", "older_first"])
def test_two_updates_of_one_second_end_in_what_stripe_holds(live, localstripe, proxy, order):
    app, client, _, sub = live
    now = _stripe_subscription(localstripe, sub["stripe_subscription_id"])  # active, on Stripe
    created = int(time.time())
    older = make_event("customer.subscription.updated", {**now, "status": "past_due"}, created=created)
    newer = make_event("customer.subscription.updated", now, created=created)
    for event in ([newer, older] if order == "newer_first" else [older, newer]):
        assert post(client, event).get_json() == {"status": "processed"}
    assert _status(app, now["id"]) == "active"
    assert proxy.requests_to("GET", rf"^/v1/subscriptions/{now['id']}$")  # the tie was settled by asking
    with app.app_context():
        assert db.session.scalar(select(WebhookEvent.status).where(WebhookEvent.event_id == older["id"])) == \
            "processed"


def test_a_tie_that_changes_nothing_asks_stripe_nothing(live, localstripe, proxy):
    app, client, _, sub = live
    now = _stripe_subscription(localstripe, sub["stripe_subscription_id"])
    created = int(time.time())
    for _ in range(3):
        assert post(client, make_event("customer.subscription.updated", now, created=created)).status_code == 200
    assert proxy.requests_to("GET", r"^/v1/subscriptions/") == []


def test_two_customer_updates_of_one_second_end_in_what_stripe_holds(live, localstripe):
    app, client, made, _ = live
    stripe_customer = localstripe.v1.customers.retrieve(made["stripe_customer_id"]).to_dict()
    created = int(time.time())
    stale = make_event("customer.updated", {**stripe_customer, "email": "stale@example.com"}, created=created)
    fresh = make_event("customer.updated", stripe_customer, created=created)
    for event in (fresh, stale):
        assert post(client, event).get_json() == {"status": "processed"}
    with app.app_context():
        assert db.session.get(Customer, made["id"]).email == stripe_customer["email"]


def test_a_tie_stripe_cannot_settle_now_fails_and_is_settled_by_the_redelivery(live, localstripe, proxy):
    app, client, _, sub = live
    now = _stripe_subscription(localstripe, sub["stripe_subscription_id"])
    created = int(time.time())
    newer = make_event("customer.subscription.updated", now, created=created)
    older = make_event("customer.subscription.updated", {**now, "status": "past_due"}, created=created)
    assert post(client, newer).get_json() == {"status": "processed"}
    proxy.add_faults(*[Fault("status", 503, path=rf"^/v1/subscriptions/{now['id']}$")] * 3)
    assert post(client, older).status_code == 503  # Stripe retries it
    with app.app_context():
        stored = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == older["id"]))
        assert stored.status == "failed" and "APIError" in stored.last_error
    assert post(client, older).get_json() == {"status": "processed"}
    assert _status(app, now["id"]) == "active"


def test_settling_a_tie_holds_no_write_lock_while_stripe_answers(live, localstripe):
    app, client, _, sub = live
    now = _stripe_subscription(localstripe, sub["stripe_subscription_id"])
    created = int(time.time())
    assert post(client, make_event("customer.subscription.updated", now, created=created)).status_code == 200
    stall = Stall(app, "retrieve_subscription")  # Stripe is slow to answer the tie's fetch
    tie = make_event("customer.subscription.updated", {**now, "status": "past_due"}, created=created)
    thread, answers = in_thread(lambda: post(app.test_client(), tie))
    assert stall.reached.wait(10)
    # Meanwhile another event is stored and handled: nothing waits on the stalled fetch.
    other = make_event("customer.created", customer(f"cus_other_{uuid.uuid4().hex[:6]}", user_id="someone-else"))
    started = time.monotonic()
    assert post(client, other).get_json() == {"status": "processed"}
    assert time.monotonic() - started < 5
    stall.resume()
    thread.join(30)
    assert answers[0].get_json() == {"status": "processed"} and _status(app, now["id"]) == "active"


def test_an_objects_history_is_never_read_to_order_its_events(app, client):
    with app.app_context():
        db.session.add(Customer(user_id="user-1", email="ada@example.com", stripe_customer_id="cus_1"))
        db.session.commit()
    for n in range(20):  # a history
        post(client, make_event("customer.updated", customer("cus_1", email=f"e{n}@example.com"), created=T0 + n))
    sent = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    with app.app_context():
        sa_event.listen(db.engine, "before_cursor_execute", capture)
    try:
        post(client, make_event("customer.updated", customer("cus_1", email="last@example.com"), created=T0 + 99))
    finally:
        with app.app_context():
            sa_event.remove(db.engine, "before_cursor_execute", capture)
    history = [s for s in sent if "FROM webhook_events" in s and "object_id" in s]
    assert history == []
    with app.app_context():
        row = db.session.scalar(select(Customer))
        assert (row.email, row.last_event_at) == ("last@example.com", dt.datetime.fromtimestamp(
            T0 + 99, tz=dt.timezone.utc))


def test_a_customer_deletion_cancels_its_live_subscriptions(app, client):
    with app.app_context():
        db.session.add(Customer(user_id="user-1", email="ada@example.com", stripe_customer_id="cus_1"))
        db.session.commit()
    post(client, make_event("customer.subscription.created", subscription("sub_1", "cus_1"), created=T0))
    post(client, make_event("customer.subscription.created", subscription("sub_2", "cus_1", price="price_b"),
                            created=T0))
    assert post(client, make_event("customer.deleted", customer("cus_1", deleted=True), created=T0 + 5)).get_json() \
        == {"status": "processed"}
    with app.app_context():
        assert sorted(db.session.execute(select(Subscription.stripe_subscription_id, Subscription.status))) == [
            ("sub_1", "canceled"), ("sub_2", "canceled")]
        assert db.session.scalar(select(Customer.stripe_customer_id)) is None


def test_a_deletion_outlives_the_inbox_purge(make_app):
    app = make_app()
    client = app.test_client()
    post(client, make_event("customer.created", customer("cus_1"), created=T0))
    post(client, make_event("customer.deleted", customer("cus_1", deleted=True), created=T0 + 10))
    with app.app_context():
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=31)
        assert purge_expired_events(later) == 2
        assert db.session.scalar(select(DeletedStripeCustomer.stripe_customer_id)) == "cus_1"
    # An older event about it, delivered after the purge: the customer stays unlinked.
    answer = post(client, make_event("customer.subscription.created", subscription("sub_1", "cus_1"), created=T0 + 5))
    assert answer.get_json() == {"status": "ignored"}
    post(client, make_event("customer.updated", customer("cus_1", email="late@example.com"), created=T0 + 6))
    with app.app_context():
        assert db.session.execute(select(Customer.stripe_customer_id, Customer.email)).all() == [
            (None, "ada@example.com")]


def test_our_subscription_is_found_after_its_customer_was_deleted_and_unlinked(app, client):
    with app.app_context():
        db.session.add(Customer(user_id="user-1", email="ada@example.com", stripe_customer_id="cus_1"))
        db.session.commit()
        customer_id = db.session.scalar(select(Customer.id))
    post(client, make_event("customer.deleted", customer("cus_1", deleted=True), created=T0 + 5))
    ours = {**subscription("sub_ours", "cus_1", user_id=None), "metadata": {"kamiyo_customer_id": str(customer_id)}}
    # An older event of ours (still active then) arrives after the deletion: stored canceled, as Stripe has it.
    assert post(client, make_event("customer.subscription.created", ours, created=T0 + 1)).get_json() == {
        "status": "processed"}
    with app.app_context():
        row = db.session.scalar(select(Subscription))
        assert (row.stripe_subscription_id, row.customer_id, row.status) == ("sub_ours", customer_id, "canceled")
    stored = json.loads(json.dumps(ours))
    stored["status"] = "canceled"
    assert post(client, make_event("customer.subscription.deleted", stored, created=T0 + 6)).get_json() == {
        "status": "processed"}
