"""What each handled event type changes, also when events arrive out of order."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from tests.webhooks.stripe_signing import customer, make_event, post, subscription
from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.webhooks import handlers, inbox
from kamiyo.webhooks.models import PaymentOutcome, WebhookEvent
from kamiyo.webhooks.outcomes import payment_success_rate

pytestmark = pytest.mark.both_databases  # upserts and conditional updates: dialect-specific SQL

T0 = 1_800_000_000


@pytest.fixture
def our_customer(app):
    """A customer our API created (row with the Stripe id) before any webhook."""
    with app.app_context():
        db.session.add(Customer(user_id="user-1", email="ada@example.com", stripe_customer_id="cus_1"))
        db.session.commit()


def customers(app):
    with app.app_context():
        return [(c.user_id, c.email, c.name, c.stripe_customer_id) for c in db.session.scalars(db.select(Customer))]


def subscriptions(app):
    with app.app_context():
        return [(s.stripe_subscription_id, s.customer.user_id, s.status, s.price_id, s.tier, s.current_period_end,
                 s.last_event_at) for s in db.session.scalars(db.select(Subscription))]


def outcomes(app):
    with app.app_context():
        return {o.stripe_object_id: (o.outcome, o.amount, o.currency, o.failure_code, o.stripe_customer_id)
                for o in db.session.scalars(db.select(PaymentOutcome))}


def send(client, event_type, obj, created, expected="processed"):
    answer = post(client, make_event(event_type, obj, created=created), timestamp=None)
    assert answer.get_json() == {"status": expected}, (event_type, answer.get_json())


# --------------------------------------------------------------------------- customers

def test_customer_created_updated_deleted(app, client, our_customer):
    send(client, "customer.created", customer("cus_1", name="Ada L"), T0)
    assert customers(app) == [("user-1", "ada@example.com", "Ada L", "cus_1")]
    send(client, "customer.updated", customer("cus_1", email="ada@new.example"), T0 + 1)
    assert customers(app) == [("user-1", "ada@new.example", "Ada", "cus_1")]
    send(client, "customer.deleted", customer("cus_1", deleted=True), T0 + 2)
    assert customers(app) == [("user-1", "ada@new.example", "Ada", None)]  # unlinked, history kept


def test_an_event_older_than_the_customers_deletion_does_not_link_it_again(app, client, our_customer):
    send(client, "customer.created", customer("cus_1"), T0)
    send(client, "customer.deleted", customer("cus_1", deleted=True), T0 + 10)
    # First news of its subscription, sent before the deletion and delivered after it.
    send(client, "customer.subscription.deleted", subscription("sub_1", "cus_1", status="canceled"), T0 + 9,
         expected="ignored")
    send(client, "customer.updated", customer("cus_1", email="late@example.com"), T0 + 5)
    assert customers(app) == [("user-1", "ada@example.com", "Ada", None)] and subscriptions(app) == []


def test_a_customer_created_then_deleted_in_one_batch_ends_as_if_handled_one_by_one(app):
    """Both claimed together, the deletion is stored as processed before it is applied: the
    creation must not take it for one already applied."""
    import json

    from kamiyo.webhooks import group_commit, inbox

    events = [make_event("customer.created", customer("cus_z", user_id="u-z", email="z@example.com"), created=T0),
              make_event("customer.deleted", customer("cus_z", user_id="u-z", deleted=True), created=T0 + 1)]
    with app.app_context():
        results = inbox._apply_batch([group_commit.Pending(e, json.dumps(e)) for e in events])
    assert [r.status for r in results] == ["processed", "processed"]
    assert customers(app) == [("u-z", "z@example.com", "Ada", None)]


def test_customer_made_by_our_api_is_linked_or_created_from_metadata(app, client):
    send(client, "customer.created", customer("cus_new", user_id="user-9", email="x@example.com"), T0)
    assert customers(app) == [("user-9", "x@example.com", "Ada", "cus_new")]


def test_customer_made_elsewhere_is_ignored(app, client):
    send(client, "customer.created", customer("cus_foreign", user_id=None), T0, expected="ignored")
    assert customers(app) == []


def test_a_second_stripe_customer_for_one_user_is_not_linked(app, client, our_customer):
    send(client, "customer.created", customer("cus_other", user_id="user-1"), T0, expected="ignored")
    assert customers(app) == [("user-1", "ada@example.com", None, "cus_1")]


@pytest.mark.parametrize("order", list(itertools.permutations(["created", "updated", "deleted"])))
def test_customer_events_in_any_order_end_deleted(app, client, our_customer, order):
    times = {"created": T0, "updated": T0 + 1, "deleted": T0 + 2}
    for action in order:
        send(client, f"customer.{action}", customer("cus_1", email=f"{action}@example.com"), times[action])
    assert customers(app)[0][3] is None


def test_customer_update_older_than_the_applied_one_is_skipped(app, client, our_customer):
    send(client, "customer.updated", customer("cus_1", email="newer@example.com"), T0 + 5)
    send(client, "customer.updated", customer("cus_1", email="older@example.com"), T0 + 1)
    send(client, "customer.created", customer("cus_1", email="oldest@example.com"), T0)
    assert customers(app)[0][1] == "newer@example.com"


# --------------------------------------------------------------------------- subscriptions

def test_subscription_created_updated_deleted(app, client, our_customer):
    send(client, "customer.subscription.created", subscription("sub_1", "cus_1", status="incomplete"), T0)
    end = dt.datetime.fromtimestamp(1_900_000_000, dt.timezone.utc)
    assert subscriptions(app) == [("sub_1", "user-1", "incomplete", "price_pro", "pro", end,
                                   dt.datetime.fromtimestamp(T0, dt.timezone.utc))]
    send(client, "customer.subscription.updated", subscription("sub_1", "cus_1", status="active"), T0 + 1)
    assert subscriptions(app)[0][2] == "active"
    send(client, "customer.subscription.deleted", subscription("sub_1", "cus_1", status="canceled"), T0 + 2)
    assert subscriptions(app)[0][2] == "canceled"


@pytest.mark.parametrize("order", [("deleted", "updated", "created"), ("updated", "created", "deleted"),
                                   ("updated", "deleted", "created")])
def test_subscription_events_in_the_wrong_order_end_canceled(app, client, our_customer, order):
    states = {"created": (T0, "incomplete"), "updated": (T0 + 1, "active"), "deleted": (T0 + 2, "canceled")}
    for action in order:
        created, status = states[action]
        send(client, f"customer.subscription.{action}", subscription("sub_1", "cus_1", status=status), created)
    assert subscriptions(app)[0][2] == "canceled"


def test_subscription_update_before_its_creation_keeps_the_update(app, client, our_customer):
    send(client, "customer.subscription.updated", subscription("sub_1", "cus_1", status="active"), T0 + 1)
    send(client, "customer.subscription.created", subscription("sub_1", "cus_1", status="incomplete"), T0)
    assert subscriptions(app)[0][2] == "active"


def test_subscription_before_its_customer_event_creates_the_customer_row(app, client):
    send(client, "customer.subscription.created", subscription("sub_2", "cus_2", user_id="user-2"), T0)
    assert customers(app) == [("user-2", "", None, "cus_2")]
    send(client, "customer.created", customer("cus_2", user_id="user-2", email="b@example.com"), T0)
    assert customers(app) == [("user-2", "b@example.com", "Ada", "cus_2")]
    assert subscriptions(app)[0][:3] == ("sub_2", "user-2", "active")


def test_a_long_tier_is_cut_to_what_the_column_holds(app, client, our_customer):
    """Metadata is cut to 128 characters, the tier column holds 64 (PostgreSQL refuses longer)."""
    long_tier = "t" * 100
    obj = subscription("sub_long", "cus_1")
    obj["metadata"]["kamiyo_tier"] = long_tier
    send(client, "customer.subscription.created", obj, T0)
    assert subscriptions(app)[0][4] == long_tier[:64]


def test_nul_characters_from_stripe_are_dropped_not_fatal(app, client, our_customer):
    """JSON may carry \\u0000; PostgreSQL cannot store it in text. The event must still be applied."""
    send(client, "customer.updated", customer("cus_1", email="ada\x00@example.com", name="Ada\x00 L"), T0)
    assert customers(app) == [("user-1", "ada@example.com", "Ada L", "cus_1")]


def test_subscription_of_a_customer_made_elsewhere_is_ignored(app, client):
    send(client, "customer.subscription.created", subscription("sub_x", "cus_x", user_id=None), T0,
         expected="ignored")
    assert subscriptions(app) == []


# --------------------------------------------------------------------------- payments

def invoice(inv_id, pi=None, amount=1500):
    return {"id": inv_id, "object": "invoice", "customer": "cus_1", "amount_due": amount, "amount_paid": amount,
            "currency": "eur", "payment_intent": pi}


def intent(pi_id, amount=1500, error=None):
    return {"id": pi_id, "object": "payment_intent", "customer": "cus_1", "amount": amount,
            "amount_received": 0 if error else amount, "currency": "eur", "last_payment_error": error}


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_paid_invoices_record_a_success(app, client, event_type):
    send(client, event_type, invoice("in_1"), T0)
    assert outcomes(app) == {"in_1": ("succeeded", 1500, "eur", None, "cus_1")}


def test_failed_invoice_then_its_paid_retry(app, client):
    send(client, "invoice.payment_failed", invoice("in_2"), T0)
    assert outcomes(app) == {"in_2": ("failed", 1500, "eur", None, "cus_1")}
    send(client, "invoice.paid", invoice("in_2"), T0 + 60)
    assert outcomes(app)["in_2"][0] == "succeeded"


def test_payment_intents_record_outcomes_with_the_decline_code(app, client):
    send(client, "payment_intent.succeeded", intent("pi_1"), T0)
    send(client, "payment_intent.payment_failed",
         intent("pi_2", error={"code": "card_declined", "decline_code": "insufficient_funds"}), T0)
    assert outcomes(app) == {"pi_1": ("succeeded", 1500, "eur", None, "cus_1"),
                             "pi_2": ("failed", 1500, "eur", "insufficient_funds", "cus_1")}


def test_an_invoice_and_its_payment_intent_count_once_and_older_events_do_not_win(app, client):
    send(client, "payment_intent.succeeded", intent("pi_3"), T0 + 10)
    send(client, "invoice.paid", invoice("in_3", pi="pi_3"), T0 + 10)
    send(client, "payment_intent.payment_failed", intent("pi_3", error={"code": "card_declined"}), T0)
    assert outcomes(app) == {"pi_3": ("succeeded", 1500, "eur", None, "cus_1")}


def test_a_batch_orders_an_invoice_by_the_payment_intent_whose_row_it_writes():
    """Batches handle events in the order of the rows they lock (no deadlock between two
    batches on PostgreSQL): an invoice's payment outcome is its intent's row."""
    orders = [inbox.lock_order(make_event(event_type, obj)) for event_type, obj in (
        ("invoice.paid", invoice("in_4", pi="pi_4")), ("payment_intent.succeeded", intent("pi_4")),
        ("invoice.payment_failed", invoice("in_5")), ("customer.subscription.updated", subscription("sub_4", "cus_1")),
        ("customer.deleted", customer("cus_4")))]
    assert orders == ["pi_4", "pi_4", "in_5", "sub_4", "cus_4"]


def test_an_invoice_at_our_api_version_leaves_its_payment_to_the_intents_event(app, client):
    """From API version 2025-03-31 an invoice no longer names its payment intent (nor the
    intent its invoice): both recorded, one payment would count twice."""
    current = invoice("in_6")
    del current["payment_intent"]
    send(client, "invoice.paid", current, T0)
    assert outcomes(app) == {}
    send(client, "payment_intent.succeeded", intent("pi_6"), T0)
    assert outcomes(app) == {"pi_6": ("succeeded", 1500, "eur", None, "cus_1")}
    send(client, "invoice.payment_failed", current, T0 + 1)
    assert list(outcomes(app)) == ["pi_6"]


def test_zero_invoices_are_not_payments(app, client):
    send(client, "invoice.paid", invoice("in_0", amount=0), T0)
    assert outcomes(app) == {}


def test_payment_success_rate(app, client):
    since = dt.datetime.fromtimestamp(T0, dt.timezone.utc)
    with app.app_context():
        assert payment_success_rate(since) is None
    for n in range(3):
        send(client, "payment_intent.succeeded", intent(f"pi_ok{n}"), T0 + n)
    send(client, "payment_intent.payment_failed", intent("pi_bad", error={"code": "expired_card"}), T0)
    send(client, "payment_intent.succeeded", intent("pi_old"), T0 - 3600)
    with app.app_context():
        assert payment_success_rate(since) == 0.75
        assert payment_success_rate(since - dt.timedelta(hours=2)) == 0.8


def test_every_handled_type_is_recorded_as_processed(app, client, our_customer):
    handled = {
        "customer.created": customer("cus_1"), "customer.updated": customer("cus_1"),
        "customer.subscription.created": subscription("sub_9", "cus_1"),
        "customer.subscription.updated": subscription("sub_9", "cus_1"),
        "customer.subscription.deleted": subscription("sub_9", "cus_1", status="canceled"),
        "invoice.paid": invoice("in_9"), "invoice.payment_succeeded": invoice("in_9"),
        "invoice.payment_failed": invoice("in_8"), "payment_intent.succeeded": intent("pi_9"),
        "payment_intent.payment_failed": intent("pi_8", error={"code": "card_declined"}),
        "customer.deleted": customer("cus_1"),
    }
    for n, (event_type, obj) in enumerate(handled.items()):
        send(client, event_type, obj, T0 + n)
    with app.app_context():
        stored = dict(db.session.execute(db.select(WebhookEvent.type, WebhookEvent.status)).all())
    assert stored == {event_type: "processed" for event_type in handled}
