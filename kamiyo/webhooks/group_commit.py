"""Group commit: new events from concurrent requests share one transaction.

Leader and followers, per process: a request that finds nobody writing
becomes the leader; requests arriving meanwhile queue up and wait. The leader
takes the write gate, then what has queued by then (up to MAX_BATCH events,
its own first: everything that arrived while it waited for the gate rides
along), claims and handles them in one transaction, commits once, wakes the
others (who answer 200 only now) and hands the lead to the next waiting
request, if any. SQLite takes one writer at a time, so one commit and one pass
through the gate for many events is where the throughput comes from; no
extra thread, and the leader's own event needs no hand-over.

If anything in a batch fails (a handler raising, a copy stored by another
worker meanwhile), the batch is rolled back and each of its events is then
handled alone, in its own transaction: one bad event never costs another its
answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g, has_request_context

from ..extensions import db
from ..observability.logging import on_behalf_of

log = logging.getLogger("kamiyo.webhooks")

EXTENSION = "kamiyo_webhook_group_commit"
MAX_BATCH = 64


@dataclass
class Pending:
    event: dict[str, Any]
    payload: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None
    finished: bool = False
    lead: bool = False  # set (with `done`) when this request is to write the next batch
    request_id: str | None = None  # its request's correlation id: the leader logs its event under it


class GroupCommitter:
    def __init__(
        self,
        apply_batch: Callable[[list[Pending]], list[Any]],
        apply_one: Callable[[Pending], Any],
        gate: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.apply_batch = apply_batch  # all in one transaction, committed; raises on any failure
        self.apply_one = apply_one  # one event in its own transaction (takes the gate itself)
        self.gate = gate  # held while a batch is taken and written
        self.pid = os.getpid()
        self._queue: list[Pending] = []
        self._lock = threading.Lock()
        self._busy = False

    def submit(self, event: dict[str, Any], payload: str) -> Any:
        pending = Pending(event, payload, request_id=g.get("request_id") if has_request_context() else None)
        with self._lock:
            self._queue.append(pending)
            if not self._busy:
                self._busy = True
                pending.lead = True
        if not pending.lead:
            pending.done.wait()  # a leader always finishes: it answers or hands over
        if not pending.finished:  # we lead: write a batch (ours first), then pass the lead on
            self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _take(self) -> list[Pending]:
        with self._lock:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
        return batch

    def _lead(self) -> None:
        batch: list[Pending] = []
        results: list[Any] | None = None
        try:
            try:
                with self.gate():
                    # Taken only once the gate is ours: what queued while we waited joins the batch.
                    batch = self._take()
                    results = self._apply_batch(batch)
            finally:
                if not batch:  # the gate failed: fail the batch we would have written
                    batch = self._take()
            if results is None:
                self._apply_one_by_one(batch)
            else:
                for pending, result in zip(batch, results, strict=False):
                    pending.result = result
        except BaseException as exc:  # never leave a request waiting
            for pending in batch:
                if pending.result is None and pending.error is None:
                    pending.error = exc
            raise
        finally:
            for pending in batch:
                pending.finished = True
                pending.done.set()
            with self._lock:
                if self._queue:
                    following = self._queue[0]
                    following.lead = True
                    following.done.set()
                else:
                    self._busy = False

    def _apply_batch(self, batch: list[Pending]) -> list[Any] | None:
        try:
            return self.apply_batch(batch)
        except Exception:  # noqa: BLE001 -- any failure: each event is retried alone, where it fails alone
            _roll_back()
            log.info("webhook batch of %d rolled back; handling its events one by one", len(batch))
            return None

    def _apply_one_by_one(self, batch: list[Pending]) -> None:
        for pending in batch:
            try:
                with on_behalf_of(pending.request_id):
                    pending.result = self.apply_one(pending)
            except Exception as exc:  # noqa: BLE001 -- HandlerFailed and the like: the request answers 500
                pending.error = exc
                _roll_back()


def _roll_back() -> None:
    """Roll the Session back; when even that fails (its connection is gone), the next events
    get a new Session rather than this error."""
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 -- a dead connection: start the next batch on a new session
        db.session.remove()


_made = threading.Lock()


def committer(make: Callable[[], GroupCommitter]) -> GroupCommitter:
    """This process's committer for the current app, made by `make` on first use (after any fork).

    Exactly one per process: two would each have a leader, and on PostgreSQL (where the
    gate admits everyone) both would write through the one batch Session at once.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    found = app.extensions.get(EXTENSION)
    if found is None or found.pid != os.getpid():
        with _made:  # the first requests after a start often arrive together
            found = app.extensions.get(EXTENSION)
            if found is None or found.pid != os.getpid():
                found = app.extensions[EXTENSION] = make()
    return found
