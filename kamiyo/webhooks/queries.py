"""Reads of the webhook inbox, the blocked requests and payment outcomes, for the dashboard
and the ops API alike."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, func, literal, select

from ..extensions import db
from ..listing import Page, TimeRange, paginate, series, text_filter
from ..observability.counters import counter_total
from ..observability.logging import redact_structure
from ..rollups import Source, counts, totals
from .models import EVENT_STATUSES, PaymentOutcome, RateLimitViolation, WebhookEvent

TOP_CLIENTS = 10
EVENTS_ROLLUP = "webhook_events"
VIOLATIONS_ROLLUP = "rate_limit_violations"


def rollup_sources() -> list[Source]:
    """Events received and requests blocked, per minute. An event's status changes (a replay),
    so only its arrival is counted ahead; failed and ignored events are counted from the
    table, through the (status, received_at) index. Blocked requests are counters of their
    minute, written within seconds of it (kamiyo/webhooks/limiting.py): summed."""
    return [
        Source(EVENTS_ROLLUP, WebhookEvent.received_at, key=lambda: literal("received")),
        Source(
            VIOLATIONS_ROLLUP,
            RateLimitViolation.occurred_at,
            key=lambda: literal("blocked"),
            amount=lambda: RateLimitViolation.count.expression,
        ),
    ]


def handled_event_types() -> list[str]:
    """The event types our handlers take: what a Stripe webhook endpoint must be enabled for."""
    from .handlers import HANDLERS

    return sorted(HANDLERS)


REPLAY_ACTION = "webhooks.replay"  # the ops action (kamiyo/ops_actions.py) that replays a failed event


def events(args: Mapping[str, str], window: TimeRange) -> Page:
    filters = {"status": text_filter(args, "status", EVENT_STATUSES), "type": text_filter(args, "type")}
    query = select(WebhookEvent).where(WebhookEvent.received_at >= window.start, WebhookEvent.received_at < window.end)
    if filters["status"]:
        query = query.where(WebhookEvent.status == filters["status"])
    if filters["type"]:
        query = query.where(WebhookEvent.type == filters["type"])
    page = paginate(query, WebhookEvent.id, args, WebhookEvent.received_at)
    page.filters = {name: value for name, value in filters.items() if value}
    return page


def latest_events(status: str | None, event_type: str | None, limit: int) -> list[WebhookEvent]:
    """The newest `limit` stored events, of one status and type when given (the CLI's list).
    Newest by arrival, on the (status, received_at) or received_at index."""
    query = select(WebhookEvent)
    if status:
        query = query.where(WebhookEvent.status == status)
    if event_type:
        query = query.where(WebhookEvent.type == event_type)
    query = query.order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc()).limit(limit)
    return list(db.session.scalars(query))


def event(event_id: str) -> WebhookEvent | None:
    return db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))


def _without_secret_fields(value: Any, depth: int = 0) -> Any:
    """Fields Stripe calls secret (a payment or setup intent's client_secret) are replaced
    whatever their value looks like: it confirms a payment with the publishable key."""
    if depth > 32:
        return "[TOO DEEP]"
    if isinstance(value, dict):
        return {
            key: "[REDACTED]"
            if isinstance(key, str) and "secret" in key.lower()
            else _without_secret_fields(v, depth + 1)
            for key, v in value.items()
        }
    if isinstance(value, list):
        return [_without_secret_fields(v, depth + 1) for v in value]
    return value


def sanitised_payload(row: WebhookEvent) -> str:
    """The stored body with secrets, card numbers and CVCs replaced, pretty-printed."""
    try:
        decoded = json.loads(row.payload)
    except ValueError:
        return "(not JSON)"
    return json.dumps(redact_structure(_without_secret_fields(decoded)), indent=2, sort_keys=True)


def outcome_series(window: TimeRange) -> dict[str, list[int]]:
    found = counts(EVENTS_ROLLUP, window)
    found.update(series(WebhookEvent.received_at, window, [WebhookEvent.status == "failed"], literal("failed")))
    return found


def event_counts(window: TimeRange) -> dict[str, int]:
    """Events received in the window by their status now."""
    received = totals(EVENTS_ROLLUP, window).get("received", 0)
    rows = db.session.execute(
        select(WebhookEvent.status, func.count())
        .where(
            WebhookEvent.status.in_(("failed", "ignored")),
            WebhookEvent.received_at >= window.start,
            WebhookEvent.received_at < window.end,
        )
        .group_by(WebhookEvent.status)
    )
    found = {"processed": 0, "ignored": 0, "failed": 0}
    found.update({status: int(n) for status, n in rows})
    found["processed"] = received - found["ignored"] - found["failed"]
    return found


def failed_total() -> int:
    """Failed events still in the inbox, whenever they came (a replay clears them)."""
    return int(db.session.scalar(select(func.count()).where(WebhookEvent.status == "failed")) or 0)


def duplicate_deliveries() -> int:
    """Deliveries of an event already stored, since the service started (a counter)."""
    return int(counter_total("webhook_events", outcome="duplicate"))


# --- blocked requests ---------------------------------------------------------------


def violations(args: Mapping[str, str], window: TimeRange) -> Page:
    filters = {"client_ip": text_filter(args, "client_ip"), "endpoint": text_filter(args, "endpoint")}
    query = select(RateLimitViolation).where(
        RateLimitViolation.occurred_at >= window.start, RateLimitViolation.occurred_at < window.end
    )
    for name, value in filters.items():
        if value:
            query = query.where(getattr(RateLimitViolation, name) == value)
    page = paginate(query, RateLimitViolation.id, args, RateLimitViolation.occurred_at)
    page.filters = {name: value for name, value in filters.items() if value}
    return page


def violation_series(window: TimeRange) -> dict[str, list[int]]:
    return counts(VIOLATIONS_ROLLUP, window)


def violation_count(window: TimeRange) -> int:
    return totals(VIOLATIONS_ROLLUP, window).get("blocked", 0)


def top_clients(window: TimeRange, column: str) -> list[tuple[str, int]]:
    """The most blocked client IPs (or user agents) in the range. Beyond the first few agents
    of an IP and minute, agents are counted together (limiting.OTHER_AGENTS)."""
    field = getattr(RateLimitViolation, column)
    blocked = func.sum(RateLimitViolation.count)
    rows = db.session.execute(
        select(field, blocked.label("n"))
        .where(RateLimitViolation.occurred_at >= window.start, RateLimitViolation.occurred_at < window.end)
        .group_by(field)
        .order_by(blocked.desc(), field)
        .limit(TOP_CLIENTS)
    )
    return [(value, int(n)) for value, n in rows]


# --- payments, as Stripe reported them -----------------------------------------------


def payment_success(since: dt.datetime) -> dict[str, Any]:
    succeeded, failed = db.session.execute(
        select(
            func.count(case((PaymentOutcome.outcome == "succeeded", 1))),
            func.count(case((PaymentOutcome.outcome == "failed", 1))),
        ).where(PaymentOutcome.occurred_at >= since)
    ).one()
    total = succeeded + failed
    return {
        "succeeded": int(succeeded),
        "failed": int(failed),
        "success_rate": round(succeeded / total, 4) if total else None,
    }


def serialise_event(row: WebhookEvent) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "type": row.type,
        "status": row.status,
        "object_id": row.object_id,
        "api_version": row.api_version,
        "created": row.created.isoformat(),
        "received_at": row.received_at.isoformat(),
        "processed_at": row.processed_at.isoformat() if row.processed_at else None,
        "attempts": row.attempts,
        "last_error": row.last_error,
    }


def serialise_violation(row: RateLimitViolation) -> dict[str, Any]:
    return {
        "id": row.id,
        "occurred_at": row.occurred_at.isoformat(),  # the minute counted (older rows: the block's time)
        "last_at": (row.last_at or row.occurred_at).isoformat(),
        "count": row.count,
        "client_ip": row.client_ip,
        "user_agent": row.user_agent,
        "endpoint": row.endpoint,
        "limit": row.limit,
    }
