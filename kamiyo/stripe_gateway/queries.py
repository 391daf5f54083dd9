"""Reads of the Stripe attempt record, for the dashboard and the ops API alike."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, func, select

from ..extensions import db
from ..listing import Page, TimeRange, paginate, series, text_filter
from .models import StripeCall

OUTCOMES = ("success", "error", "breaker_open")


def attempts(args: Mapping[str, str], window: TimeRange) -> Page:
    """Every attempt in the range, newest first, filtered by operation, outcome and error type."""
    filters = {
        "operation": text_filter(args, "operation"),
        "outcome": text_filter(args, "outcome", OUTCOMES),
        "error_type": text_filter(args, "error_type"),
    }
    query = select(StripeCall).where(StripeCall.created_at >= window.start, StripeCall.created_at < window.end)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(StripeCall, name) == value)
    page = paginate(query, StripeCall.id, args)
    page.filters = {name: value for name, value in filters.items() if value is not None}
    return page


def group_calls(rows: list[StripeCall]) -> list[dict[str, Any]]:
    """Attempts of one call (same request, operation and idempotency key) together, the first
    attempt leading and its retries under it, in the page's order of their newest attempt."""
    groups: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row.request_id, row.operation, row.idempotency_key_prefix) if row.request_id else ("row", row.id)
        groups.setdefault(key, {"attempts": []})["attempts"].append(row)
    for group in groups.values():
        group["attempts"].sort(key=lambda row: (row.attempt, row.id))
        group["call"], group["retries"] = group["attempts"][0], group["attempts"][1:]
    return list(groups.values())


def summary(since: dt.datetime) -> dict[str, Any]:
    """Attempts, errors and retries since `since`, with the rates the alerts use."""
    total, errors, retries = db.session.execute(
        select(
            func.count(),
            func.count(case((StripeCall.outcome == "error", 1))),
            func.count(case((StripeCall.attempt > 1, 1))),
        ).where(StripeCall.created_at >= since)
    ).one()
    return {
        "attempts": int(total),
        "errors": int(errors),
        "retries": int(retries),
        "error_rate": round(errors / total, 4) if total else 0.0,
        "retry_rate": round(retries / total, 4) if total else 0.0,
    }


def attempt_series(window: TimeRange) -> dict[str, list[int]]:
    """First attempts and retries per bucket."""
    kind = case((StripeCall.attempt > 1, "retries"), else_="first attempts")
    return series(StripeCall.created_at, window, group=kind)


def serialise(row: StripeCall) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "operation": row.operation,
        "attempt": row.attempt,
        "outcome": row.outcome,
        "error_type": row.error_type,
        "http_status": row.http_status,
        "stripe_request_id": row.stripe_request_id,
        "stripe_version": row.stripe_version,
        "duration_ms": round(row.duration_ms, 1),
        "request_id": row.request_id,
    }
