"""A duplicate delivery is answered from one read of committed data: it never waits for a writer."""

from __future__ import annotations

import threading

from kamiyo.webhooks.write_gate import write_gate
from tests.support import sqlite_only
from tests.webhooks.stripe_signing import customer, make_event, post


@sqlite_only
def test_a_duplicate_is_answered_while_a_writer_holds_the_write_gate(app, client):
    event = make_event("customer.created", customer("cus_fast_dup"))
    assert post(client, event).get_json() == {"status": "processed"}
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with app.app_context(), write_gate().held():
            holding.set()
            release.wait(30)

    def duplicate() -> None:
        answers.append(post(app.test_client(), event).get_json())

    answers: list[dict] = []
    held = threading.Thread(target=writer)
    held.start()
    try:
        assert holding.wait(10)
        delivery = threading.Thread(target=duplicate)
        delivery.start()
        delivery.join(10)  # a delivery that queued behind the writer would still be waiting
        assert answers == [{"status": "duplicate"}]
    finally:
        release.set()
        held.join(10)
