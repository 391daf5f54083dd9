"""Stripe API version health: monitor, history, weekly job, CLI, metrics."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import cli, jobs, metrics
    from .monitor import log_startup_version

    jobs.init_app(app)
    app.cli.add_command(cli.stripe_version_cli)
    # Local only: start-up never waits on the network.
    health = log_startup_version(app.config)  # [STRIPE VERSION] ...
    metrics.publish(health["status"], health["age_days"])
