"""Group commit as it is wired in the inbox: events that arrive together wait for the SQLite
write gate, then are claimed and handled in one transaction (one `received_at`, no batch
rolled back), not each alone."""

from __future__ import annotations

import json
import logging
import threading
import time

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.webhooks import group_commit, inbox
from kamiyo.webhooks.models import WebhookEvent
from kamiyo.webhooks.write_gate import write_gate
from tests.webhooks.stripe_signing import customer, make_event


def stored(app) -> dict[str, tuple]:
    with app.app_context():
        rows = db.session.execute(select(WebhookEvent.event_id, WebhookEvent.status, WebhookEvent.received_at))
        return {event_id: (status, received_at) for event_id, status, received_at in rows}


def test_events_arriving_together_wait_for_the_gate_then_share_one_transaction(make_app, caplog):
    app = make_app(WEBHOOK_GROUP_COMMIT=True)
    with app.app_context():
        for n in (1, 2):
            db.session.add(Customer(user_id=f"user-g{n}", email="", stripe_customer_id=f"cus_g{n}"))
        db.session.commit()
        committer = group_commit.committer(inbox._new_committer)
    events = [make_event("customer.updated", customer(f"cus_g{n}", user_id=f"user-g{n}"), event_id=f"evt_g{n}")
              for n in (1, 2)]
    answers: dict[str, inbox.Received] = {}

    def deliver(event: dict) -> None:
        with app.test_request_context():
            answers[event["id"]] = inbox.receive(event, json.dumps(event))

    threads = [threading.Thread(target=deliver, args=(e,), daemon=True) for e in events]
    with caplog.at_level(logging.INFO, logger="kamiyo.webhooks"):
        with app.app_context(), write_gate().held():  # another writer (a retry, a replay) holds the gate
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(committer._queue) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            # The leader takes its batch only once the gate is its own: both wait in the queue.
            assert [p.event["id"] for p in committer._queue] in (["evt_g1", "evt_g2"], ["evt_g2", "evt_g1"])
            assert stored(app) == {}
        for thread in threads:
            thread.join(30)
    assert {k: (v.status, v.attempts) for k, v in answers.items()} == {
        "evt_g1": ("processed", 1), "evt_g2": ("processed", 1)}
    rows = stored(app)
    assert {status for status, _ in rows.values()} == {"processed"} and len(rows) == 2
    assert rows["evt_g1"][1] == rows["evt_g2"][1]  # claimed in one statement, one transaction
    assert not [m for m in (r.getMessage() for r in caplog.records) if "rolled back" in m]
