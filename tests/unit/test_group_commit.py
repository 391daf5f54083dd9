"""The group committer: who writes which batch, and nobody left waiting."""

from __future__ import annotations

import contextlib
import threading

import pytest

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
