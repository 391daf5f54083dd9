"""Sources of the API versions of received webhook events.

A feature that stores events registers a source at init_app; the version check
asks them all. No source registered → None ("unverified"), which is not the
same as "no events" ({}).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask, current_app
from sqlalchemy import Table, func, or_, select

from .extensions import db

EVENT_SOURCES_KEY = "event_version_sources"

EventVersionSource = Callable[[dt.datetime], dict[str, int]]


def register_event_version_source(app: Flask, source: EventVersionSource) -> None:
    """Add a source of webhook events' API versions: source(since) -> {api_version: count}."""
    app.extensions.setdefault(EVENT_SOURCES_KEY, []).append(source)


# localstripe, the demo's Stripe emulator, stamps this version on every event it sends, whatever
# the service asks for: in demo mode its test-mode events say nothing about Stripe's versions.
EMULATOR_API_VERSION = "2017-08-15"


def table_event_version_source(table: Table) -> EventVersionSource:
    """A source reading any table with `api_version` and `received_at` (UTC) columns,
    e.g. the webhook inbox: `table_event_version_source(WebhookEvent.__table__)`.
    In demo mode, test-mode events (a `livemode` column false) carrying the emulator's
    version are left out, so that the demo's own deliveries raise no version mismatch."""

    def source(since: dt.datetime) -> dict[str, int]:
        query = (
            select(table.c.api_version, func.count()).where(table.c.received_at >= since).group_by(table.c.api_version)
        )
        if current_app.config.get("DEMO_MODE") and "livemode" in table.c:
            version = table.c.api_version
            query = query.where(or_(table.c.livemode.is_not(False), version.is_(None), version != EMULATOR_API_VERSION))
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
