"""Stripe API version health: monitor, history, weekly job, CLI, metrics."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import cli, jobs

    jobs.init_app(app)
    app.cli.add_command(cli.stripe_version_cli)
