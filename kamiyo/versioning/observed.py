"""Which Stripe API versions are really in use, as seen by this service.

Two sources feed the weekly check:
- responses: every Stripe attempt's record (`stripe_calls.stripe_version`, by
  the gateway) over the last 30 days, shared by all processes; plus what this
  process's health probes saw (`record_response_version`, in memory).
- webhook events: `webhook_event_versions(since)` asks the registered sources
  (the webhook inbox registers one with `register_event_version_source`) how
  many events per `api_version` arrived since then. No source registered →
  None ("unverified"), which is not the same as "no events" ({}).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import Table, func, select

from ..extensions import db
from ..models import utcnow

RESPONSES_KEY = "versioning_response_versions"
EVENT_SOURCES_KEY = "versioning_event_version_sources"

EventVersionSource = Callable[[dt.datetime], dict[str, int]]


class ResponseVersions:
    """Stripe-Version values seen on responses: count and last seen, per version."""

    MAX_VERSIONS = 32  # a misbehaving proxy cannot grow this without bound

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}

    def record(self, version: str, at: dt.datetime) -> None:
        with self._lock:
            entry = self._seen.get(version)
            if entry is None:
                if len(self._seen) >= self.MAX_VERSIONS:
                    return
                entry = self._seen[version] = {"count": 0, "last_seen": at}
            entry["count"] += 1
            entry["last_seen"] = at

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {v: {"count": e["count"], "last_seen": e["last_seen"].isoformat()} for v, e in self._seen.items()}


def init_app(app: Flask) -> None:
    app.extensions[RESPONSES_KEY] = ResponseVersions()
    app.extensions.setdefault(EVENT_SOURCES_KEY, [])


def record_response_version(version: str | None) -> None:
    """Called by the gateway with each response's Stripe-Version header."""
    if not version or not has_app_context():
        return
    recorder = current_app.extensions.get(RESPONSES_KEY)
    if recorder is not None:
        recorder.record(version.strip()[:64], utcnow())


RESPONSE_WINDOW = dt.timedelta(days=30)


def response_versions(now: dt.datetime | None = None) -> dict[str, dict[str, Any]]:
    """Every process's Stripe calls of the last 30 days (the stripe_calls records,
    so the scheduler process sees the web workers' traffic too), plus what this
    process's health probes saw."""
    from ..payments.models import StripeCall

    since = (now or utcnow()) - RESPONSE_WINDOW
    rows = db.session.execute(
        select(StripeCall.stripe_version, func.count(), func.max(StripeCall.created_at))
        .where(StripeCall.created_at >= since, StripeCall.stripe_version.is_not(None))
        .group_by(StripeCall.stripe_version)
    ).all()
    seen: dict[str, dict[str, Any]] = {
        str(version): {"count": count, "last_seen": last.isoformat()} for version, count, last in rows
    }
    recorder = current_app.extensions.get(RESPONSES_KEY)
    for version, entry in (recorder.snapshot() if recorder is not None else {}).items():
        merged = seen.setdefault(version, {"count": 0, "last_seen": entry["last_seen"]})
        merged["count"] += entry["count"]
        merged["last_seen"] = max(merged["last_seen"], entry["last_seen"])
    return seen


def register_event_version_source(app: Flask, source: EventVersionSource) -> None:
    """Add a source of webhook events' API versions: source(since) -> {api_version: count}."""
    app.extensions.setdefault(EVENT_SOURCES_KEY, []).append(source)


def table_event_version_source(table: Table) -> EventVersionSource:
    """A source reading any table with `api_version` and `received_at` (UTC) columns,
    e.g. the webhook inbox: `table_event_version_source(WebhookEvent.__table__)`."""

    def source(since: dt.datetime) -> dict[str, int]:
        query = (
            select(table.c.api_version, func.count()).where(table.c.received_at >= since).group_by(table.c.api_version)
        )
        return dict(db.session.execute(query).all())

    return source


def webhook_event_versions(since: dt.datetime) -> dict[str, int] | None:
    """Events per api_version received since `since`; None when no source is wired."""
    sources = current_app.extensions.get(EVENT_SOURCES_KEY) or []
    if not sources:
        return None
    totals: dict[str, int] = {}
    for source in sources:
        for version, count in source(since).items():
            key = version or "(none)"
            totals[key] = totals.get(key, 0) + int(count)
    return totals
