"""The event inbox: each Stripe event is handled once, durably.

Every event gets a row in `webhook_events`, unique on Stripe's event id (the
claim), written in the same transaction as the handler's writes: both land or
neither. 2xx is answered only after that commit.

- Duplicates take a cheap path: one indexed read of the status, no write.
- New events go to the worker's group committer (group_commit.py): events that
  arrive together are claimed and handled in one transaction, through the
  SQLite write gate (write_gate.py).
- A handler that raises rolls back; the failure is then written in a
  transaction of its own (status `failed`, attempts, sanitised error) and the
  request answers 500. The next delivery takes the failed row again with a
  conditional UPDATE; a concurrent copy finds the row and is a duplicate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from flask import current_app
from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from ..claims import claim
from ..control_chars import replace_control
from ..extensions import db, rowcount
from ..models import utcnow
from ..observability.alerts import alert_duplicate_subscription
from ..observability.logging import on_behalf_of, redact
from ..prepared import Prepared
from ..stripe_objects import fetch_stripe_object, list_stripe_subscriptions, reference_id
from . import group_commit, handlers, metrics
from .minimise import ignored_payload, stored_form
from .models import WebhookEvent
from .write_gate import write_gate

log = logging.getLogger("kamiyo.webhooks")

DUPLICATE = "duplicate"
DONE = (handlers.PROCESSED, handlers.IGNORED)


class HandlerFailed(Exception):
    """The handler raised; the event is stored as failed and Stripe should retry."""


class NotSettled(HandlerFailed):
    """A same-second tie that Stripe could not settle now (unreachable, the breaker open):
    stored as failed, for Stripe's next delivery."""


class NoLongerFailed(Exception):
    """Replaying failed events: this one was handled meanwhile (a Stripe retry), so it is left alone."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Received:
    status: str  # processed | ignored | duplicate
    note: str
    attempts: int = 0
    follow_up: handlers.FollowUp | None = None  # done once committed, outside the transaction


# A tie is stored failed until Stripe's answer settles it: should the process die first, the
# event is not lost as handled; Stripe's retry (or `webhooks replay --failed`) settles it.
AWAITING_REFRESH = "same-second tie: waiting for the object from Stripe"


def _stored_status(result: handlers.Result) -> str:
    return "failed" if isinstance(result.follow_up, handlers.Refresh) else result.status


def _set_status(connection, event: dict[str, Any], result: handlers.Result, expected: str) -> None:
    event_id = event["id"]
    status = _stored_status(result)
    ignored = ignored_payload(event) if status == handlers.IGNORED else None
    if ignored is not None:
        # Its handler used none of it: its contact details are not kept either (minimise.py).
        db.session.execute(
            update(WebhookEvent).where(WebhookEvent.event_id == event_id).values(status=status, payload=ignored)
        )
    elif status == "failed":
        db.session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.event_id == event_id)
            .values(status="failed", last_error=AWAITING_REFRESH)
        )
    elif status != expected:
        _SET_STATUS.execute(connection, {"b_event_id": event_id, "b_status": status})


def sanitise_error(exc: BaseException) -> str:
    """Error text fit for the table and the dashboard: no secrets, one line, bounded."""
    text = replace_control(f"{type(exc).__name__}: {exc}", " ")
    return redact(text)[:500]


# The statements every delivery runs, compiled once (see kamiyo/prepared.py).
_events = cast(Table, WebhookEvent.__table__)
_CLAIM_COLUMNS = (
    "event_id",
    "type",
    "api_version",
    "livemode",
    "object_id",
    "created",
    "received_at",
    "processed_at",
    "status",
    "attempts",
    "last_error",
    "payload",
)
_STATUS = Prepared(select(_events.c.status).where(_events.c.event_id == bindparam("event_id")))
_INSERT = Prepared(insert(_events), column_keys=_CLAIM_COLUMNS)
_SET_STATUS = Prepared(
    update(_events).where(_events.c.event_id == bindparam("b_event_id")).values(status=bindparam("b_status"))
)
_BATCH_INSERTS: dict[int, Prepared] = {}  # by row count, up to group_commit.MAX_BATCH


def _insert_claims(connection, rows: list[dict[str, Any]]) -> None:
    """All of a batch's claims as one multi-row INSERT: one statement for the database to run,
    where executemany would step (and hand the GIL to another thread) once a row."""
    # Not claims.claim: one taken key must fail the whole batch (the committer then claims each event alone).
    statement = _BATCH_INSERTS.get(len(rows))
    if statement is None:
        values = [
            {name: bindparam(f"{name}_{n}", type_=_events.c[name].type) for name in _CLAIM_COLUMNS}
            for n in range(len(rows))
        ]
        statement = _BATCH_INSERTS.setdefault(len(rows), Prepared(insert(_events).values(values)))
    statement.execute(connection, {f"{name}_{n}": row[name] for n, row in enumerate(rows) for name in row})


def _status(event_id: str) -> str | None:
    """The stored status of an event: the duplicate check on every delivery.

    Committed data only, outside any transaction of the request's (see
    Prepared.read_one); writes nothing.
    """
    row = _STATUS.read_one(db.engine, {"event_id": event_id})
    return row[0] if row else None


def _object_id(event: dict[str, Any]) -> str | None:
    value = event["data"]["object"].get("id")
    return value[:255] if isinstance(value, str) else None


def _claim_row(event: dict[str, Any], payload: str, now: dt.datetime, status: str) -> dict[str, Any]:
    api_version = event.get("api_version")
    return {
        "event_id": event["id"],
        "type": event["type"],
        "api_version": api_version[:64] if isinstance(api_version, str) else None,
        "livemode": bool(event.get("livemode")),
        "object_id": _object_id(event),
        "created": handlers.event_time(event),
        "received_at": now,
        "processed_at": now,
        "status": status,  # the handler may still change it before the commit
        "attempts": 1,
        "last_error": None,
        "payload": payload,
    }


def _insert_claim(event: dict[str, Any], payload: str, now: dt.datetime, status: str) -> bool:
    """Claim one event in the session's transaction (committed with the handler's writes)."""
    return claim(lambda: _INSERT.execute(db.session.connection(), _claim_row(event, payload, now, status)))


def _reclaim(event_id: str, now: dt.datetime, only_failed: bool) -> int | None:
    """Take a stored event for another attempt; returns the attempt number or None."""
    condition = WebhookEvent.event_id == event_id
    if only_failed:
        condition = condition & (WebhookEvent.status == "failed")
    attempts = db.session.execute(
        update(WebhookEvent)
        .where(condition)
        .values(attempts=WebhookEvent.attempts + 1, processed_at=now, status=handlers.PROCESSED)
        .returning(WebhookEvent.attempts)
    ).scalar()
    if attempts is None:
        db.session.rollback()
    return attempts


def _record_failure(event: dict[str, Any], payload: str, exc: BaseException, replayed: bool = False) -> None:
    """In its own transaction: the failed attempt stays visible after the rollback.

    A replay of a handled event that fails keeps the event's status (its earlier
    handling stands: the rollback undid only the replay) but counts the attempt and
    keeps the error."""
    error = sanitise_error(exc)
    now = utcnow()
    if _insert_claim(event, payload, now, "failed"):
        db.session.execute(
            update(WebhookEvent).where(WebhookEvent.event_id == event["id"]).values(processed_at=None, last_error=error)
        )
    else:
        # Stored already: count the attempt, unless a concurrent copy succeeded meanwhile.
        condition = WebhookEvent.event_id == event["id"]
        if not replayed:
            condition = condition & (WebhookEvent.status == "failed")
        db.session.execute(
            update(WebhookEvent).where(condition).values(attempts=WebhookEvent.attempts + 1, last_error=error)
        )
    db.session.commit()


def _handle(event: dict[str, Any], payload: str, attempt: int, expected: str, replayed: bool = False) -> Received:
    try:
        result = handlers.dispatch(event)
        _set_status(db.session.connection(), event, result, expected)
        db.session.commit()
    except Exception as exc:
        db.session.rollback()
        log.exception(
            "webhook %s (%s) failed on attempt %d: %s", event["id"], event["type"], attempt, sanitise_error(exc)
        )
        _record_failure(event, payload, exc, replayed)
        metrics.EVENTS.labels("failed").inc()
        raise HandlerFailed(event["id"]) from exc
    metrics.EVENTS.labels(_stored_status(result)).inc()
    return Received(result.status, result.note, attempt, result.follow_up)


def _receive_one(event: dict[str, Any], payload: str) -> Received:
    """One event in its own transaction; the caller holds the write gate."""
    now = utcnow()
    expected = handlers.expected_status(event)
    attempt = 1 if _insert_claim(event, payload, now, expected) else None
    if attempt is None:
        # Stored meanwhile (a concurrent copy) or failed before: only a failed one is taken again.
        attempt = _reclaim(event["id"], now, only_failed=True)
        expected = handlers.PROCESSED
        if attempt is None:
            metrics.EVENTS.labels(DUPLICATE).inc()
            return Received(DUPLICATE, "already handled")
    return _handle(event, payload, attempt, expected)


_BATCH_SESSION = "kamiyo_webhook_batch_session"


@contextlib.contextmanager
def _batch_session() -> Iterator[None]:
    """The batches' own Session, installed as `db.session` while one is written.

    Its connection stays open from batch to batch, rather than checked out of
    the pool and back for every batch. One leader at a time uses it (the write gate), and it is closed
    after each batch, so no ORM object outlives the transaction that loaded it.
    """
    found = current_app.extensions.get(_BATCH_SESSION)
    if found is not None and found[0] == os.getpid() and found[1].bind.invalidated:
        found[1].bind.close()  # the database dropped it: reconnecting, it would hold a pool slot for good
        found = None
    if found is None or found[0] != os.getpid():  # made in each worker, after the fork
        connection = db.engine.connect()
        connection.connection.detach()  # takes no pool slot; closed with the app
        found = current_app.extensions[_BATCH_SESSION] = (os.getpid(), Session(bind=connection))
    registry = db.session.registry
    previous = registry() if registry.has() else None
    registry.set(cast(Any, found[1]))  # a plain Session: Flask-SQLAlchemy's adds only get_bind routing
    try:
        yield
    finally:
        found[1].close()  # rolls back whatever was not committed; the connection stays open
        if previous is None:
            registry.clear()
        else:
            registry.set(previous)


def _apply_batch(batch: list[group_commit.Pending]) -> list[Received]:
    """Claim and handle new events in one transaction; raises (nothing committed) on any failure.

    The caller (the group committer) holds the write gate.
    """
    with _batch_session():
        return _write_batch(batch)


def _write_batch(batch: list[group_commit.Pending]) -> list[Received]:
    now = utcnow()
    connection = db.session.connection()
    seen: set[str] = set()
    try:
        fresh: list[tuple[group_commit.Pending, str]] = []
        for pending in batch:
            if pending.event["id"] not in seen:  # two copies in one batch: the second is a duplicate
                seen.add(pending.event["id"])
                fresh.append((pending, handlers.expected_status(pending.event)))
        # Handled in the order of the objects they lock (stable: one object's events keep their
        # arrival order), so that concurrent batches on PostgreSQL queue rather than deadlock.
        fresh.sort(key=lambda item: lock_order(item[0].event))
        # All claims in one statement; a copy stored meanwhile by another worker fails it all.
        # In event id order: on PostgreSQL two workers' batches holding copies of the same
        # events then wait for each other in one order, never in a deadlock.
        _insert_claims(
            connection,
            sorted(
                (_claim_row(p.event, p.payload, now, expected) for p, expected in fresh),
                key=lambda row: row["event_id"],
            ),
        )
        outcome: dict[str, Received] = {}
        for pending, expected in fresh:
            event = pending.event
            with on_behalf_of(pending.request_id):  # its log lines carry its own request's id
                result = handlers.dispatch(event)
                # The next handler's Core statements must see this one's ORM writes.
                db.session.flush()
            _set_status(connection, event, result, expected)
            outcome[event["id"]] = Received(result.status, result.note, 1, result.follow_up)
        db.session.commit()
        # pop: the same event twice in one batch is handled once, then answered as a duplicate.
        already = Received(DUPLICATE, "already handled")
        received = [outcome.pop(p.event["id"], already) for p in batch]
    except Exception:
        db.session.rollback()  # inside the gate: SQLite's write lock goes with it
        raise
    for each in received:
        metrics.EVENTS.labels("failed" if isinstance(each.follow_up, handlers.Refresh) else each.status).inc()
    return received


def lock_order(event: dict[str, Any]) -> str:
    """The row an event's handler locks first: what a batch's events are handled in the order of.

    PostgreSQL: two workers' batches that lock the same objects in opposite orders would
    deadlock (detected after a second, both batches then redone one event at a time). In
    one global order they queue instead. A payment's outcome row is keyed by the intent an
    invoice names, so invoice.paid and payment_intent.succeeded sort as one object. (The
    first news of a subscription locks its customer too, second: rare enough to leave to
    PostgreSQL's deadlock detection and the one-by-one redo.)
    """
    obj = event["data"]["object"]
    if event["type"].startswith("invoice."):
        return reference_id(obj.get("payment_intent")) or str(obj.get("id") or "")
    return str(obj.get("id") or "")


def _held_gate():
    return write_gate().held()


def _new_committer() -> group_commit.GroupCommitter:
    return group_commit.GroupCommitter(_apply_batch, _apply_one, _held_gate)


def _apply_one(pending: group_commit.Pending) -> Received:
    with write_gate().held():
        return _receive_one(pending.event, pending.payload)


def receive(event: dict[str, Any], payload: str) -> Received:
    """Store and handle a verified event, once. Raises HandlerFailed."""
    status = _status(event["id"])
    if status in DONE:
        metrics.EVENTS.labels(DUPLICATE).inc()
        return Received(DUPLICATE, "already handled")
    # Handled and stored without what no handler reads (minimise.py): a replay does the same.
    event, payload = stored_form(event, payload)
    started = time.perf_counter()
    try:
        if status is None and current_app.config["WEBHOOK_GROUP_COMMIT"]:
            received = group_commit.committer(_new_committer).submit(event, payload)
        else:
            with write_gate().held():  # failed before: this delivery is the retry
                received = _receive_one(event, payload)
        return _follow_up(event, received)
    finally:
        metrics.HANDLING_SECONDS.observe(time.perf_counter() - started)


def _follow_up(event: dict[str, Any], received: Received) -> Received:
    """What a handler left for after its commit, outside any transaction and the write gate."""
    item = received.follow_up
    if isinstance(item, handlers.DuplicateFound):
        alert_duplicate_subscription(item.stripe_id, item.duplicate_of, item.customer_id, item.price_id)
    elif isinstance(item, handlers.Refresh):
        return _settle_tie(event, item, received.attempts)
    elif isinstance(item, handlers.CustomerLinked):
        _store_subscriptions_of(item.stripe_customer_id)
    return received


def _store_subscriptions_of(stripe_customer_id: str) -> None:
    """The subscriptions of a customer we just linked whose events came before its own (they
    were ignored then). Best effort: should Stripe not answer, `payments reconcile` adopts them."""
    try:
        listed = list_stripe_subscriptions(stripe_customer_id)
    except Exception as exc:  # noqa: BLE001 -- the event is applied; what Stripe lists is a bonus
        log.warning(
            "subscriptions of customer %s not fetched (reconcile adopts them): %s",
            stripe_customer_id,
            sanitise_error(exc),
        )
        return
    for obj in listed:
        with write_gate().held():
            try:
                result = handlers.store_listed_subscription(obj)
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 -- stored meanwhile by its own event, say
                db.session.rollback()
                log.warning("subscription %s of a linked customer not stored: %s", obj.get("id"), sanitise_error(exc))
                continue
        if result is not None:
            log.info("subscription %s stored from its newly linked customer", obj.get("id"))
            if result.follow_up is not None:
                _follow_up({}, Received(result.status, result.note, 0, result.follow_up))


def _settle_tie(event: dict[str, Any], refresh: handlers.Refresh, attempt: int) -> Received:
    """Two events of one second disagree: store what Stripe holds now. A Stripe call never runs
    inside a write transaction (it would hold every other writer up); the event stays failed
    until this is done, so Stripe delivers it again if it cannot be."""
    try:
        obj = fetch_stripe_object(refresh.kind, refresh.stripe_id)
    except Exception as exc:  # Stripe unreachable, the breaker open, ...: Stripe's retry settles it
        db.session.rollback()
        db.session.execute(
            update(WebhookEvent).where(WebhookEvent.event_id == event["id"]).values(last_error=sanitise_error(exc))
        )
        db.session.commit()
        log.warning("webhook %s: same-second tie not settled: %s", event["id"], sanitise_error(exc))
        raise NotSettled(event["id"]) from exc
    try:
        with write_gate().held():
            result = handlers.apply_refreshed(refresh, obj)
            db.session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.event_id == event["id"], WebhookEvent.status == "failed")
                .values(status=handlers.PROCESSED, last_error=None)
            )
            db.session.commit()
    except Exception as exc:  # stays failed: Stripe's next delivery settles it
        db.session.rollback()
        log.exception("webhook %s: storing what Stripe holds failed: %s", event["id"], sanitise_error(exc))
        _record_failure(event, "", exc)
        metrics.EVENTS.labels("failed").inc()
        raise HandlerFailed(event["id"]) from exc
    metrics.EVENTS.labels(handlers.PROCESSED).inc()
    return _follow_up(event, Received(handlers.PROCESSED, result.note, attempt, result.follow_up))


def replay(event_id: str, only_failed: bool = False) -> Received:
    """Run a stored event through its handler again (`only_failed`: only if its last attempt
    failed, checked as it is taken). Raises LookupError, NoLongerFailed, HandlerFailed."""
    row = db.session.execute(select(WebhookEvent.payload).where(WebhookEvent.event_id == event_id)).scalar()
    db.session.rollback()  # end the read before the write transaction begins
    if row is None:
        raise LookupError(event_id)
    event = json.loads(row)
    with write_gate().held():
        attempt = _reclaim(event_id, utcnow(), only_failed=only_failed)
        if attempt is None:
            status = _status(event_id)
            if status is None:  # purged meanwhile
                raise LookupError(event_id)
            raise NoLongerFailed(status)
        received = _handle(event, row, attempt, handlers.PROCESSED, replayed=True)
    return _follow_up(event, received)


def replay_for_operator(event_id: str) -> tuple[str, str]:
    """The dashboard's replay button: a failed event through its handler again, as
    (outcome, message) in the operator's words."""
    try:
        received = replay(event_id, only_failed=True)
    except NoLongerFailed as exc:  # a Stripe retry got there first
        return "refused", f"not replayed: the event is {exc.status} now"
    except LookupError:
        return "failed", "not stored (unknown id, or purged)"
    except HandlerFailed:
        return "failed", "failed again; the error is stored on the event"
    return "ok", f"{received.status} (attempt {received.attempts}): {received.note}"


def failed_event_ids() -> list[str]:
    return list(
        db.session.scalars(
            select(WebhookEvent.event_id).where(WebhookEvent.status == "failed").order_by(WebhookEvent.created)
        )
    )


def purge_expired_events(now: dt.datetime | None = None) -> int:
    """Delete events received more than WEBHOOK_RETENTION_DAYS ago; returns how many.

    30 days by default: longer than Stripe's 3-day retry window, as long as
    Stripe's own Events API keeps them.
    """
    cutoff = (now or utcnow()) - dt.timedelta(days=int(current_app.config["WEBHOOK_RETENTION_DAYS"]))
    deleted = rowcount(db.session.execute(delete(WebhookEvent).where(WebhookEvent.received_at < cutoff)))
    db.session.commit()
    log.info("purged %d webhook events from before %s", deleted, cutoff.isoformat())
    return deleted
