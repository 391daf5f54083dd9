"""The group committer: who writes which batch, and nobody left waiting."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from kamiyo.webhooks import group_commit
from kamiyo.webhooks.group_commit import GroupCommitter
from tests.support import wait_until


def _event(n: int) -> dict:
    return {"id": f"evt_{n}"}


def test_requests_that_queue_while_the_leader_waits_for_the_gate_join_its_batch():
    gate_open = threading.Event()
    batches: list[list[str]] = []

    @contextlib.contextmanager
    def gate():
        gate_open.wait(10)  # another worker is writing
        yield

    def apply_batch(batch):
        batches.append([p.event["id"] for p in batch])
        return [f"done {p.event['id']}" for p in batch]

    committer = GroupCommitter(apply_batch, lambda pending: pytest.fail("no batch failed"), gate)
    answers: dict[int, str] = {}

    def deliver(n: int) -> None:
        answers[n] = committer.submit(_event(n), "{}")

    leader = threading.Thread(target=deliver, args=(0,))
    leader.start()
    wait_until(lambda: committer._busy, timeout=5)
    followers = [threading.Thread(target=deliver, args=(n,)) for n in (1, 2, 3)]
    for thread in followers:
        thread.start()
    wait_until(lambda: len(committer._queue) == 4, timeout=5)
    gate_open.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert batches == [["evt_0", "evt_1", "evt_2", "evt_3"]]  # one transaction for all four
    assert answers == {n: f"done evt_{n}" for n in range(4)}
    assert not committer._busy and not committer._queue


def test_a_gate_that_fails_fails_the_waiting_requests_and_the_next_one_still_leads():
    failing = [True]

    @contextlib.contextmanager
    def gate():
        if failing[0]:
            raise OSError("lock file gone")
        yield

    committer = GroupCommitter(lambda batch: ["ok"] * len(batch), lambda pending: "ok", gate)
    with pytest.raises(OSError):
        committer.submit(_event(1), "{}")
    assert not committer._busy and not committer._queue
    failing[0] = False
    assert committer.submit(_event(2), "{}") == "ok"


def test_requests_arriving_together_at_a_fresh_worker_share_one_committer(monkeypatch):
    """Two committers in one process would mean two leaders writing at once."""
    from flask import Flask

    made = GroupCommitter.__init__

    def slowly(self, *args):
        made(self, *args)
        time.sleep(0.05)  # long enough for the other request to look meanwhile

    monkeypatch.setattr(GroupCommitter, "__init__", slowly)
    app, found = Flask(__name__), []
    start = threading.Barrier(2)

    def look() -> None:
        with app.app_context():
            start.wait(5)
            found.append(group_commit.committer(
                lambda: GroupCommitter(lambda batch: [], lambda pending: None, contextlib.nullcontext)))

    threads = [threading.Thread(target=look) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(found) == 2 and found[0] is found[1]


def test_a_broken_connection_in_the_one_by_one_redo_costs_only_its_own_event(app, monkeypatch):
    """The redo after a failed batch rolls back after each failed event; when that rollback fails
    too (the connection is gone), the events after it are still tried, on a new Session."""
    from kamiyo.extensions import db

    def apply_one(pending):
        if pending.event["id"] == "evt_1":
            raise RuntimeError("connection lost")
        return f"done {pending.event['id']}"

    def rollback():
        raise RuntimeError("connection lost, still")

    committer = GroupCommitter(lambda batch: 1 / 0, apply_one)  # the batch fails: one by one
    pending = [group_commit.Pending(_event(n), "{}") for n in (1, 2, 3)]
    with app.app_context():
        monkeypatch.setattr(db.session, "rollback", rollback)
        committer._queue.extend(pending)
        committer._busy = True
        committer._lead()
    assert [(p.result, type(p.error).__name__ if p.error else None) for p in pending] == [
        (None, "RuntimeError"), ("done evt_2", None), ("done evt_3", None)]
