"""Sources of the API versions of received webhook events.

A feature that stores events registers a source at init_app; the version check
asks them all. No source registered → None ("unverified"), which is not the
same as "no events" ({}).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import Flask, current_app
from sqlalchemy import Table, func, select

from .extensions import db

EVENT_SOURCES_KEY = "event_version_sources"

EventVersionSource = Callable[[dt.datetime], dict[str, int]]


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
