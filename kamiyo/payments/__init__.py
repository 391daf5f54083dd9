"""Stripe customers and subscriptions: the gateway, errors and the JSON API."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import gateway, views
    from .cli import payments_cli

    gateway.init_app(app)
    app.register_blueprint(views.bp)
    app.cli.add_command(payments_cli)
