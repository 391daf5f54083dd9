"""Reads of the Stripe attempt record, for the dashboard and the ops API alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import case, select

from ..listing import Page, TimeRange, paginate, text_filter
from ..rollups import Source, counts, totals
from .models import StripeCall

ROLLUP = "stripe_calls"

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
    page = paginate(query, StripeCall.id, args, StripeCall.created_at)
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


def rollup_source() -> Source:
    """Attempts per minute by outcome and by first attempt or retry: "error:retry", say."""
    return Source(
        ROLLUP,
        StripeCall.created_at,
        key=lambda: StripeCall.outcome + ":" + case((StripeCall.attempt > 1, "retry"), else_="first"),
    )


def summary(window: TimeRange) -> dict[str, Any]:
    """Attempts, errors and retries in the window, with the rates the alerts use."""
    found = totals(ROLLUP, window)
    total = sum(found.values())
    errors = sum(n for key, n in found.items() if key.startswith("error:"))
    retries = sum(n for key, n in found.items() if key.endswith(":retry"))
    return {
        "attempts": total,
        "errors": errors,
        "retries": retries,
        "error_rate": round(errors / total, 4) if total else 0.0,
        "retry_rate": round(retries / total, 4) if total else 0.0,
    }


def attempt_series(window: TimeRange) -> dict[str, list[int]]:
    """First attempts and retries per bucket."""
    return counts(ROLLUP, window, group=lambda key: "retries" if key.endswith(":retry") else "first attempts")


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
