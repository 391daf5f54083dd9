"""Stripe webhooks: verified, rate-limited, deduplicated, durable and replayable."""

from __future__ import annotations

from typing import cast

from flask import Flask


def init_app(app: Flask) -> None:
    from sqlalchemy import Table

    from .. import scheduler
    from ..event_versions import register_event_version_source, table_event_version_source
    from ..openapi import register_paths
    from ..ops_actions import register_action
    from ..rollups import register_source
    from . import cli, metrics, views
    from .inbox import DUPLICATE, purge_expired_events, replay_for_operator
    from .limiting import init_pending, purge_old_violations, warn_if_counted_per_worker
    from .models import EVENT_STATUSES, WebhookEvent
    from .queries import REPLAY_ACTION, rollup_sources

    # What an event is stored as, or a duplicate of one stored.
    metrics.init_event_series((*EVENT_STATUSES, DUPLICATE))
    app.register_blueprint(views.bp)
    register_paths(app, views.OPENAPI)
    init_pending(app)  # blocked requests counted in memory, written together
    warn_if_counted_per_worker(app)
    app.cli.add_command(cli.webhooks_cli)
    # The inbox and the rate-limit record keep WEBHOOK_RETENTION_DAYS (30): purged once a day.
    scheduler.register_job(
        app,
        "webhook-purge",
        scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"]),
        lambda: (purge_expired_events(), purge_old_violations()),
        scheduler.day,
    )
    scheduler.register_fallback(app, "webhook-purge")  # run by the web process if no scheduler does
    # The version check compares the api_version of recent events with ours.
    register_event_version_source(app, table_event_version_source(cast(Table, WebhookEvent.__table__)))
    register_action(app, REPLAY_ACTION, replay_for_operator)  # the dashboard's replay button
    for source in rollup_sources():  # per-minute counts for the dashboard
        register_source(app, source)
