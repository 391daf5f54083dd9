"""Liveness and readiness: GET /health (app + database), and the registry of
health sections that features add to the payments health answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

HEALTH_CHECKS = "health_checks"

HealthCheck = Callable[[], dict[str, Any]]


def register_health_check(app: Flask, name: str, check: HealthCheck) -> None:
    """Add a section (e.g. the version monitor's) to GET /api/v1/payments/health.
    A check returns a dict with at least `ok`."""
    app.extensions.setdefault(HEALTH_CHECKS, {})[name] = check


def health_checks() -> dict[str, HealthCheck]:
    return dict(current_app.extensions.get(HEALTH_CHECKS, {}))


@bp.get("/health")
def health():
    try:
        db.session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as exc:
        # The reason goes to the log only: a response never carries SQL or paths.
        log.error("health: database check failed: %s", type(exc).__name__)
        db.session.rollback()
        database = "unavailable"
    ok = database == "ok"
    answer = {"status": "ok" if ok else "unavailable", "database": database}
    if current_app.config.get("RELEASE_ID"):
        answer["release"] = current_app.config["RELEASE_ID"]
    return jsonify(answer), 200 if ok else 503
