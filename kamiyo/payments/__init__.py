"""Stripe customers and subscriptions: fenced phases, reconcile and the JSON API."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from .. import scheduler
    from . import customers, metrics, openapi, prices, subscriptions, views
    from .cli import payments_cli
    from .reconcile import reconcile_daily
    from .retention import purge_expired_records

    metrics.init_operation_series(
        {
            customers.OPERATION: metrics.CREATE_OUTCOMES,
            subscriptions.OPERATION: metrics.CREATE_OUTCOMES,
            subscriptions.CANCEL_OPERATION: metrics.CANCEL_OUTCOMES,
        }
    )
    prices.init_app(app)
    app.register_blueprint(views.bp)
    openapi.init_app(app)  # its paths in GET /api/v1/openapi.json
    app.cli.add_command(payments_cli)
    scheduler.register_job(
        app,
        "payments-purge",
        scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"]),
        purge_expired_records,
        scheduler.day,
    )
    scheduler.register_fallback(app, "payments-purge")  # run by the web process if no scheduler does
    # What no request or webhook brought in (Stripe forgets keys after a day): adopted nightly.
    scheduler.register_job(
        app,
        "payments-reconcile",
        scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"], hour=4, minute=0),
        reconcile_daily,
        scheduler.day,
    )
