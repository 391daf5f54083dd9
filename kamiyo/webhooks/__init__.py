"""Stripe webhooks: verified, rate-limited, deduplicated, durable and replayable."""

from __future__ import annotations

from typing import cast

from flask import Flask


def init_app(app: Flask) -> None:
    from sqlalchemy import Table

    from .. import scheduler
    from ..event_versions import register_event_version_source, table_event_version_source
    from . import cli, limiting, metrics, views
    from .inbox import DUPLICATE, purge_expired_events
    from .limiting import purge_old_violations
    from .models import EVENT_STATUSES, WebhookEvent

    # What an event is stored as, or a duplicate of one stored.
    metrics.init_event_series((*EVENT_STATUSES, DUPLICATE))
    limiting.init_app(app)  # Flask-Limiter storage, trusted proxies, 429 answer
    app.register_blueprint(views.bp)
    app.cli.add_command(cli.webhooks_cli)
    # The inbox and the rate-limit record keep WEBHOOK_RETENTION_DAYS (30): purged once a day.
    scheduler.register_job(
        app,
        "webhook-purge",
        scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"]),
        lambda: (purge_expired_events(), purge_old_violations()),
        scheduler.day,
    )
    # The version check compares the api_version of recent events with ours.
    register_event_version_source(app, table_event_version_source(cast(Table, WebhookEvent.__table__)))
