"""The ways a customer was billed twice, each reproduced with workers on one database, a lease
scaled down to seconds, and faults from the Stripe emulator proxy. Stripe's side is checked
behind our back: at most one live subscription per customer and price, whatever we answered."""

from __future__ import annotations

import time
import uuid

import pytest

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import Subscription
from tests.support import FAST_RETRIES, LEASE_SECONDS, SHORT_LEASE, both_databases, make_key
from tests.payments.workers import API, Stall, in_thread, live_stripe_subscriptions, new_customer
from tests.webhooks.stripe_signing import make_event, post

pytestmark = both_databases

SUBSCRIPTIONS = f"{API}/subscriptions"


@pytest.fixture
def workers(make_app, proxy):
    """Two workers (apps) on one database, talking to Stripe through the emulator proxy."""
    return make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE), make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)


def _user() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


def test_a_worker_stalled_past_its_lease_stops_instead_of_billing_after_the_cancel(workers, proxy, localstripe,
                                                                                  plan_id):
    w1, w2 = workers
    headers, c1, c2 = make_key(w1), w1.test_client(), w2.test_client()
    customer = new_customer(c2, headers, _user())
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    # The first request's card attach fails three times: the operation is let go, to be resumed.
    proxy.add_faults(*[Fault("status", 503, path=r"^/v1/payment_methods/.*/attach$")] * 3)
    assert c2.post(SUBSCRIPTIONS, json=body, headers=headers).status_code == 502
    # W1 resumes it, attaches the card, and stalls for longer than its lease.
    stall = Stall(w1, "attach_payment_method")
    thread, answers = in_thread(lambda: c1.post(SUBSCRIPTIONS, json=body, headers=headers))
    assert stall.reached.wait(10)
    time.sleep(LEASE_SECONDS + 0.2)
    # The client retries at W2, which takes the operation over and subscribes; the user cancels.
    created = c2.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    cancel = c2.post(f"{SUBSCRIPTIONS}/{created.get_json()['id']}/cancel", headers=headers)
    assert cancel.get_json()["status"] == "canceled"
    posts_before = len(proxy.requests_to("POST", r"^/v1/subscriptions$"))

    stall.resume()
    thread.join(30)
    [late] = answers
    # W1 answers the operation's result as it stands, or 409; it calls Stripe no more.
    assert late.status_code in (200, 409), late.get_json()
    assert late.status_code == 409 or late.get_json()["id"] == created.get_json()["id"]
    assert len(proxy.requests_to("POST", r"^/v1/subscriptions$")) == posts_before
    assert live_stripe_subscriptions(localstripe, customer["stripe_customer_id"]) == []


def test_lost_replies_then_a_removed_card_replay_the_create_instead_of_a_second_one(make_app, proxy, localstripe,
                                                                                  plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    stripe_id = customer["stripe_customer_id"]
    # The customer pays with their saved default card.
    localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    localstripe.v1.customers.update(stripe_id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro"}
    # All three replies to the create are lost: the subscription exists on Stripe, we answer 503.
    proxy.add_faults(*[Fault("drop_after", path=r"^/v1/subscriptions$")] * 3)
    assert client.post(SUBSCRIPTIONS, json=body, headers=headers).status_code == 503
    [made] = live_stripe_subscriptions(localstripe, stripe_id)
    # The user removes the saved card; the client retries, then sends a card.
    localstripe.v1.customers.update(stripe_id, params={"invoice_settings": {"default_payment_method": ""}})
    retried = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert retried.status_code == 201, retried.get_json()
    assert retried.get_json()["stripe_subscription_id"] == made["id"]
    with_card = client.post(SUBSCRIPTIONS, json={**body, "payment_method": "pm_card_visa"}, headers=headers)
    assert with_card.status_code == 200 and with_card.get_json()["id"] == retried.get_json()["id"]
    assert [s["id"] for s in live_stripe_subscriptions(localstripe, stripe_id)] == [made["id"]]


@pytest.mark.parametrize("deletion_first", [False, True], ids=["subscription_event_first", "deletion_first"])
def test_a_customer_deleted_while_its_subscription_is_created_ends_canceled_and_can_subscribe_again(
        make_app, proxy, plan_id, deletion_first):
    import stripe

    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = _user()
    customer = new_customer(client, headers, user)
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    stall = Stall(app, "create_subscription")  # Stripe made it; our answer is not stored yet
    thread, answers = in_thread(lambda: client.post(SUBSCRIPTIONS, json=body, headers=headers))
    assert stall.reached.wait(10)
    # Meanwhile the customer is deleted on Stripe, which cancels its subscriptions, and the
    # webhooks arrive before our create has stored anything.
    via_proxy = stripe.StripeClient("sk_test_kamiyo_tests", base_addresses={"api": proxy.url},
                                    max_network_retries=0)
    # By customer: the session's emulator may hold more than a page of other tests' subscriptions.
    [made] = via_proxy.v1.subscriptions.list(params={"customer": customer["stripe_customer_id"], "status": "all",
                                                     "limit": 100}).data
    via_proxy.v1.customers.delete(customer["stripe_customer_id"])
    cancelled = via_proxy.v1.subscriptions.retrieve(made.id).to_dict()
    assert cancelled["status"] == "canceled"
    events = [make_event("customer.subscription.deleted", cancelled),
              make_event("customer.deleted", {"id": customer["stripe_customer_id"], "object": "customer",
                                              "deleted": True})]
    for event in reversed(events) if deletion_first else events:
        assert post(client, event).get_json() == {"status": "processed"}
    stall.resume()
    thread.join(30)
    assert answers[0].status_code in (200, 201), answers[0].get_json()
    with app.app_context():
        assert db.session.scalar(db.select(Subscription.status).where(
            Subscription.stripe_subscription_id == made.id)) == "canceled"

    # Re-created, the customer subscribes anew instead of being answered with the dead one.
    again = client.post(f"{API}/customers", json={"user_id": user, "email": f"{user}@example.com"}, headers=headers)
    assert again.status_code == 201 and again.get_json()["stripe_customer_id"] != customer["stripe_customer_id"]
    resubscribed = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert resubscribed.status_code == 201, resubscribed.get_json()
    assert resubscribed.get_json()["stripe_subscription_id"] != made.id
    assert resubscribed.get_json()["status"] == "active"


def test_a_second_live_subscription_from_stripe_is_stored_flagged_answered_200_and_alerted(
        make_app, proxy, localstripe, plan_id, slack):
    url, alerts = slack
    app = make_app(STRIPE_API_BASE=proxy.url, ALERT_WEBHOOK_URL=url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    ours = client.post(SUBSCRIPTIONS, json=body, headers=headers).get_json()
    # Made on Stripe behind our back (a worker we lost track of), with our metadata.
    second = localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": plan_id}],
        "metadata": {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}}).to_dict()
    event = make_event("customer.subscription.created", second)
    for _ in range(2):  # and Stripe's retry is a duplicate, not another failure
        assert post(client, event).status_code == 200
    with app.app_context():
        flagged = db.session.scalar(db.select(Subscription).where(Subscription.stripe_subscription_id == second["id"]))
        assert flagged.status == "active" and flagged.duplicate_of == ours["id"]
    deadline = time.monotonic() + 5
    while not alerts and time.monotonic() < deadline:
        time.sleep(0.05)
    [alert] = alerts
    assert "duplicate_subscription_detected" in alert["text"]
    assert second["id"] in alert["attachments"][0]["text"] and ours["stripe_subscription_id"] in \
        alert["attachments"][0]["text"]
