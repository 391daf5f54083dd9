"""The inbox's contract, asserted where an operator or Stripe sees it: the stored row (status,
attempts, last_error, processed_at, payload), the answer, the metrics and the log lines.

Same-second ties, subscriptions fetched for a newly linked customer, failures, retries,
replays and the purge; in the one-at-a-time path (a retry, or group commit off) and the
batch path. Stripe is localstripe, or unreachable (the test apps' default)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid

import pytest
import time_machine
from prometheus_client import REGISTRY
from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.webhooks import handlers, inbox
from kamiyo.webhooks.group_commit import Pending
from kamiyo.webhooks.models import WebhookEvent
from tests.support import FAST_RETRIES, both_databases
from tests.webhooks.stripe_signing import customer, make_event, post, subscription

T0 = 1_800_000_000
OUTCOMES = ("processed", "ignored", "duplicate", "failed")


def event(event_type: str, obj: dict, created: int = T0) -> dict:
    """An event whose id no log redaction mistakes for a card number (make_event's has 19 digits)."""
    return make_event(event_type, obj, created=created, event_id=f"evt_{uuid.uuid4().hex[:12]}")


def counts() -> dict[str, float]:
    return {o: REGISTRY.get_sample_value("webhook_events_total", {"outcome": o}) or 0.0 for o in OUTCOMES}


def counted_since(before: dict[str, float]) -> dict[str, float]:
    now = counts()
    return {o: now[o] - before[o] for o in OUTCOMES if now[o] != before[o]}


def row(app, event_id: str) -> WebhookEvent | None:
    with app.app_context():
        found = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))
        if found is not None:
            db.session.expunge(found)
        return found


def state(app, event_id: str) -> tuple | None:
    found = row(app, event_id)
    return None if found is None else (found.status, found.attempts, found.last_error)


def deliver(app, event: dict) -> inbox.Received:
    """What the webhook view does with a verified event: the inbox's answer, in full."""
    with app.test_request_context():
        return inbox.receive(event, json.dumps(event))


def inbox_log(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kamiyo.webhooks" and r.levelno == level]


@pytest.fixture(params=[True, False], ids=["batch", "one_by_one"])
def group_commit(request) -> bool:
    return request.param


def stored_failure(app, event_id: str = "evt_someone_elses_failure") -> str:
    """Another event's failed row, which nothing here may touch."""
    with app.app_context():
        now = dt.datetime.now(dt.UTC)
        db.session.add(WebhookEvent(event_id=event_id, type="customer.updated", api_version=None, livemode=False,
                                    object_id="cus_other", created=now, received_at=now, processed_at=None,
                                    status="failed", attempts=3, last_error="RuntimeError: earlier", payload="{}"))
        db.session.commit()
    return event_id


def linked_customer(app, stripe_id: str, email: str = "ada@example.com") -> None:
    with app.app_context():
        db.session.add(Customer(user_id=f"user-{uuid.uuid4().hex[:8]}", email=email, stripe_customer_id=stripe_id))
        db.session.commit()


# --------------------------------------------------------------------------- same-second ties


@pytest.fixture
def tie(make_app, localstripe_url, localstripe, group_commit):
    """A customer of ours on localstripe, linked, its first update handled: the next update of
    the same second that disagrees is a tie."""
    app = make_app(STRIPE_API_BASE=localstripe_url, WEBHOOK_GROUP_COMMIT=group_commit, **FAST_RETRIES)
    on_stripe = localstripe.v1.customers.create(params={"email": "now@example.com", "name": "Ada"}).to_dict()
    linked_customer(app, on_stripe["id"])
    first = event("customer.updated", customer(on_stripe["id"], email="now@example.com"))
    assert deliver(app, first).status == "processed"
    stale = event("customer.updated", customer(on_stripe["id"], email="stale@example.com"))
    return app, on_stripe, first, stale


def test_a_tie_is_stored_failed_until_stripe_answers_then_processed(tie, monkeypatch):
    app, on_stripe, first, stale = tie
    other = stored_failure(app)
    seen = []
    real = inbox.fetch_stripe_object

    def spying(kind, stripe_id):
        seen.append((kind, stripe_id, state(app, stale["id"])))  # what a crash now would leave
        return real(kind, stripe_id)

    monkeypatch.setattr(inbox, "fetch_stripe_object", spying)
    before = counts()
    received = deliver(app, stale)
    assert seen == [("customer", on_stripe["id"], ("failed", 1, inbox.AWAITING_REFRESH))]
    assert received == inbox.Received("processed", f"customer {on_stripe['id']} settled from Stripe", 1, None)
    assert state(app, stale["id"]) == ("processed", 1, None)
    assert counted_since(before) == {"failed": 1, "processed": 1}  # stored failed, then settled
    with app.app_context():
        assert db.session.scalar(select(Customer.email)) == "now@example.com"
    assert state(app, first["id"]) == ("processed", 1, None)
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")


def test_a_tie_stripe_cannot_answer_keeps_the_error_and_answers_not_settled(make_app, group_commit, caplog):
    app = make_app(WEBHOOK_GROUP_COMMIT=group_commit, **FAST_RETRIES)  # Stripe unreachable
    linked_customer(app, "cus_tie")
    other = stored_failure(app)
    first = event("customer.updated", customer("cus_tie", email="now@example.com"))
    stale = event("customer.updated", customer("cus_tie", email="stale@example.com"))
    assert deliver(app, first).status == "processed"
    before = counts()
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"), pytest.raises(inbox.NotSettled) as raised:
        deliver(app, stale)
    assert raised.value.args == (stale["id"],)
    status, attempts, error = state(app, stale["id"])
    assert (status, attempts) == ("failed", 1)
    assert error != inbox.AWAITING_REFRESH and error.startswith("APIConnectionError: "), error
    assert f"webhook {stale['id']}: same-second tie not settled: {error}" in inbox_log(caplog, logging.WARNING)
    assert counted_since(before) == {"failed": 1}
    assert state(app, first["id"]) == ("processed", 1, None)
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")
    # The answer Stripe gets: retry later.
    answer = post(app.test_client(), stale)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "60"
    assert state(app, stale["id"])[:2] == ("failed", 2)


def test_a_tie_whose_storing_fails_stays_failed_with_its_error(tie, monkeypatch, caplog):
    app, _, first, stale = tie
    other = stored_failure(app)

    def broken(refresh, obj):
        raise RuntimeError("the database said no")

    monkeypatch.setattr(handlers, "apply_refreshed", broken)
    before = counts()
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"), pytest.raises(inbox.HandlerFailed) as raised:
        deliver(app, stale)
    assert type(raised.value) is inbox.HandlerFailed and raised.value.args == (stale["id"],)
    assert state(app, stale["id"]) == ("failed", 2, "RuntimeError: the database said no")
    errors = [r for r in caplog.records if r.name == "kamiyo.webhooks" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"webhook {stale['id']}: storing what Stripe holds failed: RuntimeError: the database said no"]
    assert counted_since(before) == {"failed": 2}  # stored failed, then failed to settle
    with app.app_context():
        assert db.session.scalar(select(Customer.email)) == "now@example.com"
    assert state(app, first["id"]) == ("processed", 1, None)
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")


def test_a_tie_that_a_newer_event_overtook_is_settled_without_a_change(tie):
    app, on_stripe, _, stale = tie
    received = deliver(app, stale)
    assert received.note == f"customer {on_stripe['id']} settled from Stripe"
    # A second delivery of the settled tie is a duplicate, not settled again.
    before = counts()
    assert deliver(app, stale) == inbox.Received("duplicate", "already handled")
    assert counted_since(before) == {"duplicate": 1}


def test_settling_leaves_alone_a_row_that_is_no_longer_failed(tie, monkeypatch):
    """Between the commit and Stripe's answer the row may change (a replay of it failed, say):
    settling touches a row only while it is still stored failed."""
    app, _, _, stale = tie
    real = inbox.fetch_stripe_object

    def meanwhile(kind, stripe_id):
        with app.app_context():
            db.session.execute(db.update(WebhookEvent).where(WebhookEvent.event_id == stale["id"]).values(
                status="processed", last_error="RuntimeError: a replay failed"))
            db.session.commit()
        return real(kind, stripe_id)

    monkeypatch.setattr(inbox, "fetch_stripe_object", meanwhile)
    assert deliver(app, stale).status == "processed"
    assert state(app, stale["id"]) == ("processed", 1, "RuntimeError: a replay failed")


# --------------------------------------------------------------------------- failures and retries


@pytest.fixture
def one_app(make_app, group_commit):
    app = make_app(WEBHOOK_GROUP_COMMIT=group_commit)
    linked_customer(app, "cus_1")
    return app


def break_handler(monkeypatch, message: str = "downstream said no") -> None:
    def broken(event):
        raise RuntimeError(message)

    monkeypatch.setitem(handlers.HANDLERS, "customer.updated", broken)


def test_a_failure_is_stored_logged_counted_and_the_retry_handles_it(one_app, monkeypatch, caplog):
    app = one_app
    other = stored_failure(app)
    update = event("customer.updated", customer("cus_1", email="new@example.com"))
    break_handler(monkeypatch)
    before = counts()
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"), pytest.raises(inbox.HandlerFailed) as raised:
        deliver(app, update)
    assert type(raised.value) is inbox.HandlerFailed and raised.value.args == (update["id"],)
    assert f"webhook {update['id']} (customer.updated) failed on attempt 1: RuntimeError: downstream said no" in \
        inbox_log(caplog, logging.ERROR)
    stored = row(app, update["id"])
    assert (stored.status, stored.attempts, stored.last_error, stored.processed_at) == (
        "failed", 1, "RuntimeError: downstream said no", None)
    assert (stored.type, stored.object_id, json.loads(stored.payload)["id"]) == (
        "customer.updated", "cus_1", update["id"])
    assert counted_since(before) == {"failed": 1}

    caplog.clear()
    break_handler(monkeypatch, "still no")
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"), pytest.raises(inbox.HandlerFailed):
        deliver(app, update)
    assert f"webhook {update['id']} (customer.updated) failed on attempt 2: RuntimeError: still no" in \
        inbox_log(caplog, logging.ERROR)
    assert state(app, update["id"]) == ("failed", 2, "RuntimeError: still no")

    monkeypatch.undo()
    before = counts()
    assert deliver(app, update) == inbox.Received("processed", "customer cus_1 saved", 3, None)
    stored = row(app, update["id"])
    assert (stored.status, stored.attempts) == ("processed", 3) and stored.processed_at is not None
    assert counted_since(before) == {"processed": 1}
    with app.app_context():
        assert db.session.scalar(select(Customer.email)) == "new@example.com"
    before = counts()
    assert deliver(app, update) == inbox.Received("duplicate", "already handled")
    assert counted_since(before) == {"duplicate": 1}
    assert state(app, update["id"])[:2] == ("processed", 3)
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")


def test_a_new_event_is_stored_with_its_claim(one_app):
    app = one_app
    update = event("customer.updated", customer("cus_1", email="new@example.com"), created=T0 + 7)
    before = counts()
    assert deliver(app, update) == inbox.Received("processed", "customer cus_1 saved", 1, None)
    assert counted_since(before) == {"processed": 1}
    stored = row(app, update["id"])
    assert (stored.status, stored.attempts, stored.last_error, stored.type, stored.api_version, stored.livemode,
            stored.object_id) == ("processed", 1, None, "customer.updated", "2026-10-28.endive", False, "cus_1")
    assert stored.created.replace(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(T0 + 7, dt.UTC)
    assert stored.processed_at == stored.received_at
    unknown = event("coupon.created", {"id": "co_1", "name": "Ten percent", "email": "x@example.com"})
    before = counts()
    assert deliver(app, unknown) == inbox.Received("ignored", "event type not handled", 1, None)
    assert counted_since(before) == {"ignored": 1}
    stored = row(app, unknown["id"])
    assert (stored.status, stored.attempts, stored.object_id) == ("ignored", 1, "co_1")
    assert "x@example.com" not in stored.payload  # an ignored event keeps none of its contact details


# --------------------------------------------------------------------------- replay


def test_replay_answers_the_operator_in_their_words(one_app, monkeypatch):
    app = one_app
    other = stored_failure(app)
    handled = event("customer.updated", customer("cus_1", email="a@example.com"), created=T0)
    failing = event("customer.updated", customer("cus_1", email="b@example.com"), created=T0 + 1)
    deliver(app, handled)
    break_handler(monkeypatch)
    with pytest.raises(inbox.HandlerFailed):
        deliver(app, failing)
    with app.app_context():
        assert inbox.replay_for_operator("evt_unknown") == ("failed", "not stored (unknown id, or purged)")
        assert inbox.replay_for_operator(handled["id"]) == ("refused", "not replayed: the event is processed now")
        assert inbox.replay_for_operator(failing["id"]) == (
            "failed", "failed again; the error is stored on the event")
    assert state(app, failing["id"]) == ("failed", 2, "RuntimeError: downstream said no")
    monkeypatch.undo()
    with app.app_context():
        assert inbox.replay_for_operator(failing["id"]) == ("ok", "processed (attempt 3): customer cus_1 saved")
        assert db.session.scalar(select(Customer.email)) == "b@example.com"
    assert state(app, failing["id"])[:2] == ("processed", 3)
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")


def test_replay_of_a_handled_event_and_its_failure(one_app, monkeypatch, caplog):
    app = one_app
    handled = event("customer.updated", customer("cus_1", email="a@example.com"), created=T0)
    deliver(app, handled)
    with app.app_context():
        assert inbox.replay(handled["id"]) == inbox.Received("processed", "customer cus_1 saved", 2, None)
        with pytest.raises(inbox.NoLongerFailed) as refused:
            inbox.replay(handled["id"], only_failed=True)
        assert refused.value.status == "processed" and str(refused.value) == "processed"
        with pytest.raises(LookupError) as unknown:
            inbox.replay("evt_unknown")
        assert unknown.value.args == ("evt_unknown",)
    break_handler(monkeypatch)
    with app.app_context(), caplog.at_level(logging.INFO, logger="kamiyo.webhooks"), \
            pytest.raises(inbox.HandlerFailed):
        inbox.replay(handled["id"])
    assert f"webhook {handled['id']} (customer.updated) failed on attempt 3: RuntimeError: downstream said no" in \
        inbox_log(caplog, logging.ERROR)
    # Its earlier handling stands; the attempt and its error are kept.
    assert state(app, handled["id"]) == ("processed", 3, "RuntimeError: downstream said no")


# --------------------------------------------------------------------------- purge


def test_the_purge_deletes_what_is_older_than_the_retention_and_says_so(make_app, caplog):
    app = make_app(WEBHOOK_RETENTION_DAYS=7)
    now = dt.datetime(2027, 1, 10, 12, 0, tzinfo=dt.UTC)
    with app.app_context():
        for name, age in (("old", dt.timedelta(days=7, seconds=1)), ("edge", dt.timedelta(days=7)),
                          ("young", dt.timedelta(days=6))):
            db.session.add(WebhookEvent(event_id=f"evt_{name}", type="customer.updated", api_version=None,
                                        livemode=False, object_id=None, created=now - age, received_at=now - age,
                                        processed_at=now - age, status="processed", attempts=1, last_error=None,
                                        payload="{}"))
        db.session.commit()
        with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"):
            assert inbox.purge_expired_events(now) == 1
        assert sorted(db.session.scalars(select(WebhookEvent.event_id))) == ["evt_edge", "evt_young"]
        assert "purged 1 webhook events from before 2027-01-03T12:00:00+00:00" in inbox_log(caplog, logging.INFO)
        # Without a time: the clock's now (held at the same instant, whatever the run's clock).
        long_ago = now - dt.timedelta(days=8)
        db.session.add(WebhookEvent(event_id="evt_long_ago", type="customer.updated", api_version=None,
                                    livemode=False, object_id=None, created=long_ago, received_at=long_ago,
                                    processed_at=long_ago, status="processed", attempts=1, last_error=None,
                                    payload="{}"))
        db.session.commit()
        with time_machine.travel(now, tick=False):
            assert inbox.purge_expired_events() == 1
        assert sorted(db.session.scalars(select(WebhookEvent.event_id))) == ["evt_edge", "evt_young"]


# --------------------------------------------------------------------------- a newly linked customer


def test_subscriptions_of_a_linked_customer_not_fetched_are_left_to_reconcile(one_app, caplog):
    app = one_app
    with app.app_context():
        db.session.add(Customer(user_id="user-new", email="", stripe_customer_id=None))
        db.session.commit()
    created = event("customer.created", customer("cus_new", user_id="user-new"))
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"):
        assert deliver(app, created) == inbox.Received("processed", "customer cus_new saved", 1,
                                                       handlers.CustomerLinked("cus_new"))
    warned = [m for m in inbox_log(caplog, logging.WARNING) if "not fetched" in m]
    assert len(warned) == 1 and warned[0].startswith(
        "subscriptions of customer cus_new not fetched (reconcile adopts them): APIConnectionError: "), warned
    assert state(app, created["id"]) == ("processed", 1, None)


def test_subscriptions_of_a_linked_customer_are_stored_each_on_its_own(make_app, localstripe_url, localstripe,
                                                                        plan_id, group_commit, monkeypatch, caplog):
    app = make_app(STRIPE_API_BASE=localstripe_url, WEBHOOK_GROUP_COMMIT=group_commit, **FAST_RETRIES)
    user = f"linked-{uuid.uuid4().hex[:8]}"
    on_stripe = localstripe.v1.customers.create(params={"email": f"{user}@example.com",
                                                        "metadata": {"kamiyo_user_id": user}})
    localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": on_stripe.id})
    localstripe.v1.customers.update(on_stripe.id,
                                    params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    subs = [localstripe.v1.subscriptions.create(params={"customer": on_stripe.id, "items": [{"plan": plan_id}]}).id
            for _ in range(4)]
    held, broken = subs[0], subs[1]
    with app.app_context():
        ours = Customer(user_id=user, email="", stripe_customer_id=None)
        db.session.add(ours)
        db.session.flush()
        db.session.add(Subscription(customer_id=ours.id, stripe_subscription_id=held, price_id=plan_id, tier="pro",
                                    status="active"))
        db.session.commit()
        ours_id = ours.id
    real = handlers.store_listed_subscription

    def failing_for_one(obj):
        if obj["id"] == broken:
            raise RuntimeError("stored meanwhile")
        return real(obj)

    monkeypatch.setattr(handlers, "store_listed_subscription", failing_for_one)
    alerts = REGISTRY.get_sample_value("duplicate_subscriptions_detected_total") or 0.0
    with caplog.at_level(logging.INFO):
        received = deliver(app, event("customer.created", on_stripe.to_dict()))
    assert received.status == "processed" and received.attempts == 1
    with app.app_context():
        stored = set(db.session.scalars(select(Subscription.stripe_subscription_id)))
    assert stored == {held, subs[2], subs[3]}  # one failing does not stop the others
    assert f"subscription {broken} of a linked customer not stored: RuntimeError: stored meanwhile" in \
        inbox_log(caplog, logging.WARNING)
    infos = [m for m in inbox_log(caplog, logging.INFO) if "newly linked" in m]
    assert sorted(infos) == sorted(f"subscription {s} stored from its newly linked customer" for s in subs[2:])
    # Two more live ones of one price: each alerted once committed.
    assert (REGISTRY.get_sample_value("duplicate_subscriptions_detected_total") or 0.0) - alerts == 2
    alerted = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT duplicate_"))
    assert [m.split(": the customer")[0] for m in alerted] == sorted(
        f"ALERT duplicate_subscription_detected: Stripe subscription {s} duplicates {held} "
        f"(customer {ours_id}, price {plan_id})" for s in subs[2:])


# --------------------------------------------------------------------------- the batch path


def test_a_batch_answers_each_event_in_turn_and_a_second_copy_as_a_duplicate(app, monkeypatch):
    linked_customer(app, "cus_b")
    linked_customer(app, "cus_a", email="grace@example.com")
    other = stored_failure(app)
    handled = []
    real = handlers.HANDLERS["customer.updated"]

    def recording(e):
        handled.append(e["data"]["object"]["id"])
        return real(e)

    monkeypatch.setitem(handlers.HANDLERS, "customer.updated", recording)
    to_b = event("customer.updated", customer("cus_b", email="b@example.com"))
    to_a = event("customer.updated", customer("cus_a", email="a@example.com"))
    unknown = event("coupon.created", {"id": "co_1"})
    before = counts()
    with app.test_request_context():
        received = inbox._apply_batch([Pending(e, json.dumps(e)) for e in (to_b, unknown, to_b, to_a)])
    assert received == [inbox.Received("processed", "customer cus_b saved", 1, None),
                        inbox.Received("ignored", "event type not handled", 1, None),
                        inbox.Received("duplicate", "already handled"),
                        inbox.Received("processed", "customer cus_a saved", 1, None)]
    assert handled == ["cus_a", "cus_b"]  # in the order of the rows they lock
    assert counted_since(before) == {"processed": 2, "ignored": 1, "duplicate": 1}
    assert [state(app, e["id"]) for e in (to_b, unknown, to_a)] == [
        ("processed", 1, None), ("ignored", 1, None), ("processed", 1, None)]
    assert state(app, other) == ("failed", 3, "RuntimeError: earlier")


def test_the_claim_keeps_bounded_event_fields(one_app):
    app = one_app
    long = event("coupon.created", {"id": "co_" + "x" * 300})
    long.update(api_version="v" * 100, livemode=True)
    bare = event("coupon.created", {"id": 12345})
    bare.update(api_version=None)
    del bare["livemode"]
    deliver(app, long)
    deliver(app, bare)
    stored = row(app, long["id"])
    assert (stored.api_version, stored.livemode, stored.object_id) == ("v" * 64, True, ("co_" + "x" * 300)[:255])
    stored = row(app, bare["id"])
    assert (stored.api_version, stored.livemode, stored.object_id) == (None, False, None)


def test_the_object_an_event_locks_first():
    def of(event_type, obj):
        return inbox.lock_order({"type": event_type, "data": {"object": obj}})

    assert of("invoice.paid", {"id": "in_1", "payment_intent": "pi_1"}) == "pi_1"
    assert of("invoice.paid", {"id": "in_1", "payment_intent": {"id": "pi_2", "object": "payment_intent"}}) == "pi_2"
    assert of("invoice.payment_failed", {"id": "in_1", "payment_intent": None}) == "in_1"
    assert of("invoice.paid", {}) == ""
    assert of("payment_intent.succeeded", {"id": "pi_1", "invoice": "in_1"}) == "pi_1"
    assert of("customer.updated", {}) == ""


def test_an_error_is_stored_on_one_bounded_line_without_secrets():
    text = inbox.sanitise_error(RuntimeError("line one\nline two\tkey sk_test_abcdefgh12345678 " + "y" * 600))
    assert text.startswith("RuntimeError: line one line two key ") and len(text) == 500
    assert "sk_test_abcdefgh12345678" not in text and "\n" not in text and "\t" not in text


@both_databases
def test_failed_event_ids_are_the_failed_ones_oldest_first(app):
    # The newest stored and received first (Stripe delivers late at times): neither the order of
    # storing nor the (status, received_at) index gives the oldest first without the ORDER BY.
    with app.app_context():
        for name, status, created, received in (("late", "failed", T0 + 2, T0 + 2), ("done", "processed", T0, T0),
                                                ("early", "failed", T0 + 1, T0 + 3)):
            at = dt.datetime.fromtimestamp(created, dt.UTC)
            got = dt.datetime.fromtimestamp(received, dt.UTC)
            db.session.add(WebhookEvent(event_id=f"evt_{name}", type="customer.updated", api_version=None,
                                        livemode=False, object_id=None, created=at, received_at=got,
                                        processed_at=got, status=status, attempts=1, last_error=None, payload="{}"))
        db.session.commit()
        assert inbox.failed_event_ids() == ["evt_early", "evt_late"]


def test_a_second_live_subscription_is_alerted_with_its_customer(app, caplog):
    """A first-news subscription row has no customer_id before the flush: the alert must name the customer."""
    linked_customer(app, "cus_1")
    with app.app_context():
        ours = db.session.scalar(select(Customer.id))
    deliver(app, event("customer.subscription.created", subscription("sub_1", "cus_1"), created=T0))
    with caplog.at_level(logging.INFO):
        received = deliver(app, event("customer.subscription.created", subscription("sub_2", "cus_1"), created=T0))
    assert received.follow_up == handlers.DuplicateFound("sub_2", "sub_1", ours, "price_pro")
    assert f"subscription sub_2 duplicates sub_1 (customer {ours}, price price_pro): stored flagged" in \
        inbox_log(caplog, logging.CRITICAL)
    assert any(r.getMessage().startswith(
        f"ALERT duplicate_subscription_detected: Stripe subscription sub_2 duplicates sub_1 (customer {ours}, ")
        for r in caplog.records)


def test_a_handled_type_its_handler_ignores_is_stored_ignored_on_a_retry_too(one_app, monkeypatch):
    app = one_app
    not_ours = event("customer.created", {"id": "cus_not_ours", "object": "customer", "metadata": {}})
    first_time = event("customer.created", {"id": "cus_not_ours_2", "object": "customer", "metadata": {}})
    assert deliver(app, first_time) == inbox.Received("ignored", "customer not created by Kamiyo", 1, None)
    assert state(app, first_time["id"]) == ("ignored", 1, None)

    def broken(e):
        raise RuntimeError("not now")

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", broken)
    with pytest.raises(inbox.HandlerFailed):
        deliver(app, not_ours)
    monkeypatch.undo()
    before = counts()
    assert deliver(app, not_ours) == inbox.Received("ignored", "customer not created by Kamiyo", 2, None)
    assert counted_since(before) == {"ignored": 1}
    assert state(app, not_ours["id"])[:2] == ("ignored", 2)


def test_a_copy_stored_meanwhile_by_another_worker_is_a_duplicate(one_app):
    """The one-at-a-time path after a failed batch: a concurrent copy claimed and handled the
    event first, so this one is answered as a duplicate and takes nothing again."""
    app = one_app
    update = event("customer.updated", customer("cus_1", email="new@example.com"))
    deliver(app, update)
    before = counts()
    with app.test_request_context():
        assert inbox._apply_one(Pending(update, json.dumps(update))) == inbox.Received("duplicate", "already handled")
    assert counted_since(before) == {"duplicate": 1}
    assert state(app, update["id"]) == ("processed", 1, None)


# --------------------------------------------------------------------------- a tie that settles into a duplicate


@pytest.fixture
def second_live(make_app, localstripe_url, localstripe, plan_id):
    """Two active subscriptions of one customer and price on localstripe; ours holds the first.
    The second's first news named another price; an update of the same second names ours."""

    def make(group_commit: bool):
        app = make_app(STRIPE_API_BASE=localstripe_url, WEBHOOK_GROUP_COMMIT=group_commit, **FAST_RETRIES)
        on_stripe = localstripe.v1.customers.create(params={"email": "two@example.com"})
        localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": on_stripe.id})
        localstripe.v1.customers.update(on_stripe.id,
                                        params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
        held, second = (localstripe.v1.subscriptions.create(
            params={"customer": on_stripe.id, "items": [{"plan": plan_id}]}).id for _ in range(2))
        linked_customer(app, on_stripe.id)
        with app.app_context():
            ours = db.session.scalar(select(Customer.id).where(Customer.stripe_customer_id == on_stripe.id))
            db.session.add(Subscription(customer_id=ours, stripe_subscription_id=held, price_id=plan_id, tier="pro",
                                        status="active"))
            db.session.commit()
        first = event("customer.subscription.updated",
                      subscription(second, on_stripe.id, price="price_other"))
        assert deliver(app, first).note == f"subscription {second} is active"
        tie = event("customer.subscription.updated", subscription(second, on_stripe.id, price=plan_id))
        return app, tie, handlers.DuplicateFound(second, held, ours, plan_id)

    return make


def alerts_sent() -> float:
    return REGISTRY.get_sample_value("duplicate_subscriptions_detected_total") or 0.0


def test_a_tie_settled_into_a_second_live_subscription_is_alerted(second_live, group_commit, caplog):
    app, tie, duplicate = second_live(group_commit)
    alerts = alerts_sent()
    with caplog.at_level(logging.INFO):
        received = deliver(app, tie)
    assert received == inbox.Received(
        "processed", f"subscription {duplicate.stripe_id} is active, flagged as a duplicate", 1, duplicate)
    assert state(app, tie["id"]) == ("processed", 1, None)
    assert alerts_sent() - alerts == 1
    assert any(r.getMessage().startswith(
        f"ALERT duplicate_subscription_detected: Stripe subscription {duplicate.stripe_id} duplicates "
        f"{duplicate.duplicate_of} (customer {duplicate.customer_id}, ") for r in caplog.records)


def test_a_tie_left_failed_is_settled_by_its_replay_and_alerted(second_live, monkeypatch):
    """Stripe did not answer when the tie came; the operator's replay settles it (and sends the
    alert the settled object calls for)."""
    app, tie, duplicate = second_live(True)

    def unreachable(kind, stripe_id):
        raise RuntimeError("Stripe is down")

    monkeypatch.setattr(inbox, "fetch_stripe_object", unreachable)
    with pytest.raises(inbox.NotSettled):
        deliver(app, tie)
    assert state(app, tie["id"]) == ("failed", 1, "RuntimeError: Stripe is down")
    monkeypatch.undo()
    alerts = alerts_sent()
    with app.app_context():
        received = inbox.replay(tie["id"], only_failed=True)
    assert received == inbox.Received(
        "processed", f"subscription {duplicate.stripe_id} is active, flagged as a duplicate", 2, duplicate)
    assert state(app, tie["id"]) == ("processed", 2, None)
    assert alerts_sent() - alerts == 1


# --------------------------------------------------------------------------- replay: the row it leaves


def test_a_replay_stores_when_it_handled_the_event(one_app):
    app = one_app
    handled = event("customer.updated", customer("cus_1", email="a@example.com"))
    deliver(app, handled)
    first = row(app, handled["id"]).processed_at
    with app.app_context():
        assert inbox.replay(handled["id"]).attempts == 2
    replayed = row(app, handled["id"]).processed_at
    assert first is not None and replayed is not None and replayed >= first


def test_a_replay_of_an_event_purged_meanwhile_names_it(one_app, monkeypatch):
    """Read, then purged by `webhooks purge` in another process before the replay takes it."""
    app = one_app
    handled = event("customer.updated", customer("cus_1", email="a@example.com"))
    deliver(app, handled)
    real = inbox._reclaim

    def purged_first(event_id, now, only_failed):
        assert inbox.purge_expired_events(now=now + dt.timedelta(days=365)) >= 1
        return real(event_id, now, only_failed)

    monkeypatch.setattr(inbox, "_reclaim", purged_first)
    with app.app_context(), pytest.raises(LookupError) as purged:
        inbox.replay(handled["id"])
    assert purged.value.args == (handled["id"],)
    assert row(app, handled["id"]) is None
