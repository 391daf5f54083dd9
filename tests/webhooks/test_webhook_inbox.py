"""The inbox: once per event id, durable, retried after a failure, replayable, purged."""

from __future__ import annotations

import json

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import sqlite_only
from tests.webhooks.stripe_signing import URL, customer, make_event, post, signed
from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.webhooks import handlers, metrics
from kamiyo.webhooks.inbox import purge_expired_events
from kamiyo.webhooks.models import WebhookEvent

pytestmark = pytest.mark.both_databases


def rows(app):
    with app.app_context():
        return {r.event_id: (r.status, r.attempts, r.last_error) for r in db.session.scalars(db.select(WebhookEvent))}


def test_a_duplicate_delivery_is_answered_without_processing_again(app, client):
    event = make_event("customer.created", customer("cus_dup"))
    assert post(client, event).get_json() == {"status": "processed"}
    with app.app_context():
        db.session.execute(db.update(Customer).values(email="changed@example.com"))
        db.session.commit()
    assert post(client, event).get_json() == {"status": "duplicate"}
    with app.app_context():
        assert db.session.scalar(db.select(Customer.email)) == "changed@example.com"  # not applied again
    assert rows(app) == {event["id"]: ("processed", 1, None)}


def test_ten_concurrent_copies_are_processed_once(app, serve_app):
    url = serve_app(app) + URL
    body, headers = signed(make_event("customer.created", customer("cus_race")))
    processed_before = metrics.EVENTS.labels("processed")._value.get()

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: requests.post(url, data=body, headers=headers, timeout=30), range(10)))
    assert sorted(r.json()["status"] for r in answers) == ["duplicate"] * 9 + ["processed"]
    assert metrics.EVENTS.labels("processed")._value.get() == processed_before + 1
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Customer.id))) == 1
    assert [v[:2] for v in rows(app).values()] == [("processed", 1)]


def test_a_failing_handler_rolls_back_answers_500_and_the_redelivery_succeeds(app, client, monkeypatch):
    real = handlers.HANDLERS["customer.created"]

    def broken(event):
        real(event)  # writes the customer row ...
        raise RuntimeError("downstream said no (key sk_test_abcdefgh12345678)")  # ... then fails

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", broken)
    event = make_event("customer.created", customer("cus_fail"))
    for attempt in (1, 2):
        response = post(client, event)
        assert response.status_code == 500
        assert response.get_json()["error"]["code"] == "webhook_failed"
        status, attempts, error = rows(app)[event["id"]]
        assert (status, attempts) == ("failed", attempt)
        assert error.startswith("RuntimeError: downstream said no") and "abcdefgh" not in error
        with app.app_context():
            assert db.session.scalar(db.select(db.func.count(Customer.id))) == 0  # rolled back with the event

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", real)
    assert post(client, event).get_json() == {"status": "processed"}
    assert rows(app)[event["id"]][:2] == ("processed", 3)
    with app.app_context():
        assert db.session.scalar(db.select(Customer.stripe_customer_id)) == "cus_fail"
    assert post(client, event).get_json() == {"status": "duplicate"}


def test_unknown_event_types_are_stored_as_ignored(app, client):
    event = make_event("balance.available", {"id": "bal_1", "object": "balance"})
    assert post(client, event).get_json() == {"status": "ignored"}
    assert rows(app) == {event["id"]: ("ignored", 1, None)}


def test_purge_removes_events_older_than_the_retention(make_app):
    app = make_app(WEBHOOK_RETENTION_DAYS=30)
    client = app.test_client()
    old, recent = make_event("balance.available", {"id": "b1"}), make_event("balance.available", {"id": "b2"})
    post(client, old), post(client, recent)
    now = dt.datetime.now(dt.timezone.utc)
    with app.app_context():
        db.session.execute(db.update(WebhookEvent).where(WebhookEvent.event_id == old["id"])
                           .values(received_at=now - dt.timedelta(days=31)))
        db.session.commit()
        assert purge_expired_events() == 1
        assert purge_expired_events(now=now + dt.timedelta(days=31)) == 1
    assert rows(app) == {}


def test_replay_cli_reruns_one_event_or_all_failed_ones(app, client, runner, monkeypatch):
    ok = make_event("customer.created", customer("cus_r1", user_id="u-r1"))
    post(client, ok)
    real = handlers.HANDLERS["customer.created"]
    monkeypatch.setitem(handlers.HANDLERS, "customer.created", lambda e: 1 / 0)
    broken = make_event("customer.created", customer("cus_r2", user_id="u-r2"))
    assert post(client, broken).status_code == 500

    result = runner.invoke(args=["webhooks", "replay", "--failed"])
    assert result.exit_code == 1 and f"{broken['id']}: failed again" in result.output
    assert rows(app)[broken["id"]][:2] == ("failed", 2)

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", real)
    result = runner.invoke(args=["webhooks", "replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert f"{broken['id']}: processed (attempt 3): customer cus_r2 saved" in result.output
    assert runner.invoke(args=["webhooks", "replay", "--failed"]).output.strip() == "No failed events."

    result = runner.invoke(args=["webhooks", "replay", ok["id"]])
    assert result.exit_code == 0 and f"{ok['id']}: processed (attempt 2)" in result.output
    result = runner.invoke(args=["webhooks", "replay", "evt_nope"])
    assert result.exit_code == 1 and "evt_nope: not stored" in result.output
    assert runner.invoke(args=["webhooks", "replay"]).exit_code == 2


def test_a_failed_replay_of_a_handled_event_keeps_its_status_and_records_the_attempt(app, client, runner,
                                                                                  monkeypatch):
    event = make_event("customer.created", customer("cus_r3", user_id="u-r3"))
    assert post(client, event).get_json() == {"status": "processed"}
    monkeypatch.setitem(handlers.HANDLERS, "customer.created", lambda e: 1 / 0)
    result = runner.invoke(args=["webhooks", "replay", event["id"]])
    assert result.exit_code == 1 and "failed again" in result.output
    status, attempts, error = rows(app)[event["id"]]
    # Its first handling stands (the replay was rolled back); the failed attempt is on record.
    assert (status, attempts) == ("processed", 2) and error.startswith("ZeroDivisionError")


def test_replaying_failed_events_skips_one_that_a_stripe_retry_handled_meanwhile(app, client, runner, monkeypatch):
    from kamiyo.webhooks import inbox

    event = make_event("customer.created", customer("cus_r4", user_id="u-r4"))
    assert post(client, event).get_json() == {"status": "processed"}
    calls = []
    monkeypatch.setattr(inbox, "failed_event_ids", lambda: [event["id"]])  # listed just before the retry landed
    monkeypatch.setattr(handlers, "dispatch", lambda e: calls.append(e) or pytest.fail("handled twice"))
    result = runner.invoke(args=["webhooks", "replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{event['id']}: skipped, processed meanwhile"
    assert calls == [] and rows(app)[event["id"]][:2] == ("processed", 1)


def test_a_failing_event_in_a_batch_does_not_fail_the_others(app, serve_app, monkeypatch):
    """Concurrent new events share a transaction; one raising costs only itself its answer."""
    real = handlers.HANDLERS["customer.created"]
    bad_id = "evt_bad_in_batch"

    def sometimes_broken(event):
        if event["id"] == bad_id:
            raise RuntimeError("this one is broken")
        return real(event)

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", sometimes_broken)
    url = serve_app(app) + URL
    events = [make_event("customer.created", customer(f"cus_b{n}", user_id=f"user-b{n}")) for n in range(11)]
    events.append(make_event("customer.created", customer("cus_bad", user_id="user-bad"), event_id=bad_id))
    bodies = [signed(event) for event in events]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda b: requests.post(url, data=b[0], headers=b[1], timeout=30), bodies))
    codes = {event["id"]: answer.status_code for event, answer in zip(events, answers)}
    assert codes.pop(bad_id) == 500 and set(codes.values()) == {200}
    stored = rows(app)
    assert stored[bad_id][:2] == ("failed", 1)
    assert {v[0] for k, v in stored.items() if k != bad_id} == {"processed"} and len(stored) == 12
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Customer.id))) == 11


def test_a_batch_claims_its_events_in_event_id_order_whatever_their_arrival(app):
    """Two workers' batches with copies of the same events lock them in the same order
    (on PostgreSQL a crossed order is a deadlock); handlers still run in arrival order."""
    from kamiyo.webhooks import inbox
    from kamiyo.webhooks.group_commit import Pending

    events = [make_event("customer.created", customer(f"cus_order_{n}", user_id=f"user-order-{n}"),
                         event_id=f"evt_order_{n}") for n in (3, 1, 2)]
    with app.test_request_context():
        results = inbox._apply_batch([Pending(e, json.dumps(e)) for e in events])
        claimed = list(db.session.scalars(db.select(WebhookEvent.event_id).order_by(WebhookEvent.id)))
    assert claimed == ["evt_order_1", "evt_order_2", "evt_order_3"]
    assert [r.note for r in results] == [f"customer cus_order_{n} saved" for n in (3, 1, 2)]


@sqlite_only
def test_the_sqlite_write_gate_uses_a_lock_file_next_to_the_database(app, tmp_path):
    from kamiyo.webhooks.write_gate import WriteGate, _lock_path, write_gate

    with app.app_context():
        gate = write_gate()
        assert gate.lock_path == str(tmp_path / "kamiyo.db") + ".write-lock"
        with gate.held():
            assert (tmp_path / "kamiyo.db.write-lock").exists()
    assert _lock_path("postgresql://u@127.0.0.1/kamiyo") is None
    assert _lock_path("sqlite://") is None
    with WriteGate(None).held():  # PostgreSQL: nothing to queue
        pass


def test_a_batch_that_fails_is_rolled_back_and_its_events_handled_one_by_one(app, monkeypatch):
    import json

    from kamiyo.webhooks import group_commit, inbox

    real = handlers.HANDLERS["customer.created"]

    def second_one_breaks(event):
        if event["id"] == "evt_b2":
            raise RuntimeError("no")
        return real(event)

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", second_one_breaks)
    events = [make_event("customer.created", customer(f"cus_{n}", user_id=f"u-{n}"), event_id=f"evt_b{n}")
              for n in (1, 2, 3)]
    batch = [group_commit.Pending(e, json.dumps(e)) for e in events] + [group_commit.Pending(events[0], "{}")]
    with app.app_context():
        committer = group_commit.GroupCommitter(inbox._apply_batch, inbox._apply_one)
        committer._queue.extend(batch)
        committer._busy = True
        committer._lead()
    assert [p.result.status if p.result else type(p.error).__name__ for p in batch] == \
        ["processed", "HandlerFailed", "processed", "duplicate"]
    assert all(p.done.is_set() for p in batch)
    assert {k: v[:2] for k, v in rows(app).items()} == {
        "evt_b1": ("processed", 1), "evt_b2": ("failed", 1), "evt_b3": ("processed", 1)}


def test_an_older_event_in_the_same_batch_is_not_superseded_by_an_unhandled_sibling(app):
    from kamiyo.models import Customer
    from kamiyo.webhooks import inbox
    from kamiyo.webhooks.group_commit import Pending
    from tests.webhooks.stripe_signing import customer, make_event

    # created (ours: it names the user) and, a second later, updated without the metadata.
    created = make_event("customer.created", customer("cus_batch", user_id="user-batch"), created=1_700_000_000)
    updated = make_event("customer.updated", customer("cus_batch", user_id=None, email="new@example.com"),
                         created=1_700_000_001)
    batch = [Pending(created, json.dumps(created)), Pending(updated, json.dumps(updated))]
    with app.test_request_context():
        results = inbox._apply_batch(batch)
        row = db.session.scalar(db.select(Customer).where(Customer.stripe_customer_id == "cus_batch"))
    assert [r.status for r in results] == ["processed", "processed"], results
    assert row is not None and (row.user_id, row.email) == ("user-batch", "new@example.com")


def test_a_subscription_created_and_updated_in_one_batch_ends_in_the_update(app):
    """The created event adds the row through the ORM; the update in the same
    transaction must see it (flushed), not call itself superseded."""
    from kamiyo.models import Subscription
    from kamiyo.webhooks import inbox
    from kamiyo.webhooks.group_commit import Pending
    from tests.webhooks.stripe_signing import subscription

    created = make_event("customer.subscription.created",
                         subscription("sub_batch", "cus_batch_sub", status="incomplete", user_id="user-sub"),
                         created=1_700_000_000)
    updated = make_event("customer.subscription.updated",
                         subscription("sub_batch", "cus_batch_sub", status="active", user_id="user-sub"),
                         created=1_700_000_005)
    batch = [Pending(created, json.dumps(created)), Pending(updated, json.dumps(updated))]
    with app.test_request_context():
        results = inbox._apply_batch(batch)
        row = db.session.scalar(db.select(Subscription).where(Subscription.stripe_subscription_id == "sub_batch"))
    assert [r.note for r in results] == ["subscription sub_batch is incomplete", "subscription sub_batch is active"]
    assert row.status == "active"


def test_each_event_of_a_batch_is_logged_under_its_own_requests_id(app, monkeypatch):
    """The leader handles its followers' events; their log lines must carry the followers' ids."""
    import logging

    from flask import g

    from kamiyo.observability.logging import RequestContextFilter
    from kamiyo.webhooks import group_commit, inbox

    real = handlers.HANDLERS["customer.created"]

    def logging_handler(event):
        logging.getLogger("kamiyo.webhooks").warning("handling %s", event["id"])
        return real(event)

    monkeypatch.setitem(handlers.HANDLERS, "customer.created", logging_handler)
    records: list[logging.LogRecord] = []
    collector = logging.Handler()
    collector.emit = records.append
    collector.addFilter(RequestContextFilter())
    logging.getLogger("kamiyo.webhooks").addHandler(collector)
    events = [make_event("customer.created", customer(f"cus_log{n}", user_id=f"u-log{n}"), event_id=f"evt_log{n}")
              for n in (1, 2)]
    batch = [group_commit.Pending(e, json.dumps(e), request_id=f"request{n}abc") for n, e in enumerate(events, 1)]
    try:
        with app.test_request_context():
            g.request_id = "leaderrequest1"  # the leader's own request
            inbox._apply_batch(batch)
    finally:
        logging.getLogger("kamiyo.webhooks").removeHandler(collector)
    handled = {r.getMessage(): r.request_id for r in records if r.getMessage().startswith("handling")}
    assert handled == {"handling evt_log1": "request1abc", "handling evt_log2": "request2abc"}


def test_batches_run_on_their_own_session_which_keeps_nothing_between_batches(app):
    from flask import current_app

    from kamiyo.webhooks import inbox
    from kamiyo.webhooks.group_commit import Pending

    event = make_event("customer.created", customer("cus_own", user_id="user-own"))
    with app.test_request_context():
        request_session = db.session()
        inbox._apply_batch([Pending(event, json.dumps(event))])
        _, batch_session = current_app.extensions[inbox._BATCH_SESSION]
        assert db.session() is request_session  # given back to the request
        assert batch_session is not request_session
        assert len(batch_session.identity_map) == 0 and not batch_session.in_transaction()
        assert db.engine.pool.checkedout() == 0  # its connection takes no pool slot
        assert db.session.scalar(db.select(Customer.user_id).where(Customer.stripe_customer_id == "cus_own")) \
            == "user-own"
