"""Group commit: new events from concurrent requests share one transaction.

Each process has one writer thread. Request threads hand it their verified
event and wait; it takes whatever has queued up (up to MAX_BATCH events),
claims and handles them in one transaction through the write gate, commits
once, and wakes the requests, which answer 200 only now. SQLite takes one
writer at a time, so one commit and one pass through the gate for many events
is where the throughput comes from.

If anything in a batch fails (a handler raising, a copy stored by another
worker meanwhile), the batch is rolled back and each of its events is then
handled alone, in its own transaction: one bad event never costs another its
answer.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask, current_app

from ..extensions import db

log = logging.getLogger("kamiyo.webhooks")

EXTENSION = "kamiyo_webhook_group_commit"
MAX_BATCH = 64
IDLE_SECONDS = 30.0  # the writer thread ends after this long without work
WAIT_SECONDS = 60.0  # a request gives up (500, Stripe retries) after this long


@dataclass
class Pending:
    event: dict[str, Any]
    payload: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class GroupCommitter:
    def __init__(self, app: Flask, apply_batch: Callable[[list[Pending]], list[Any]],
                 apply_one: Callable[[Pending], Any]) -> None:
        self.app = app
        self.apply_batch = apply_batch  # all in one transaction, committed; raises on any failure
        self.apply_one = apply_one  # one event in its own transaction
        self.pid = os.getpid()
        self._queue: queue.Queue[Pending] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, event: dict[str, Any], payload: str) -> Any:
        pending = Pending(event, payload)
        with self._lock:
            self._queue.put(pending)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="webhook-group-commit", daemon=True)
                self._thread.start()
        if not pending.done.wait(WAIT_SECONDS):
            raise TimeoutError("the webhook writer did not answer in time")
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _run(self) -> None:
        with self.app.app_context():
            while True:
                try:
                    batch = [self._queue.get(timeout=IDLE_SECONDS)]
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._thread = None
                            return
                    continue
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                self._process(batch)

    def _process(self, batch: list[Pending]) -> None:
        try:
            try:
                results = self.apply_batch(batch)
            except Exception:
                db.session.rollback()
                log.info("webhook batch of %d rolled back; handling its events one by one", len(batch))
                results = None
            for index, pending in enumerate(batch):
                if results is not None:
                    pending.result = results[index]
                    continue
                try:
                    pending.result = self.apply_one(pending)
                except Exception as exc:  # HandlerFailed and the like: the request answers 500
                    db.session.rollback()
                    pending.error = exc
        except BaseException as exc:  # never leave a request waiting
            for pending in batch:
                if pending.result is None and pending.error is None:
                    pending.error = exc
            raise
        finally:
            for pending in batch:
                pending.done.set()


def committer(apply_batch, apply_one) -> GroupCommitter:
    """This process's committer for the current app (made on first use, after any fork)."""
    app = current_app._get_current_object()
    found = app.extensions.get(EXTENSION)
    if found is None or found.pid != os.getpid():
        found = app.extensions[EXTENSION] = GroupCommitter(app, apply_batch, apply_one)
    return found
