"""Stripe customers and subscriptions: the gateway, errors and the JSON API."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from .. import scheduler
    from . import gateway, views
    from .cli import payments_cli
    from .retention import purge_expired_records

    gateway.init_app(app)
    app.register_blueprint(views.bp)
    app.cli.add_command(payments_cli)
    scheduler.register_job(app, "payments-purge", scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"]),
                           purge_expired_records, scheduler.day)
