"""Release checks as commands: `preflight` before a release, `verify-deploy` after it, and
`report` for the first hour, day and week (the deployment checklist, run rather than read).

A feature like the dashboard: it reads the others through their `queries.py` and talks to
Stripe through the gateway, read-only.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from . import cli

    cli.init_app(app)
