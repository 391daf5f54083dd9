"""Liveness and readiness: GET /health (app + database)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


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
    return jsonify(status="ok" if ok else "unavailable", database=database), 200 if ok else 503
