"""The payments JSON API."""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, Flask, current_app, jsonify

from .gateway import get_gateway

bp = Blueprint("payments", __name__, url_prefix="/api/v1/payments")

HEALTH_CHECKS = "payments_health_checks"


def register_health_check(app: Flask, name: str, check: Callable[[], dict[str, Any]]) -> None:
    """Let a feature (circuit breaker, version monitor) add its section to the
    payments health answer. A check returns a dict with at least `ok`."""
    app.extensions.setdefault(HEALTH_CHECKS, {})[name] = check


@bp.get("/health")
def payments_health():
    gateway = get_gateway()
    sections: dict[str, Any] = {
        "stripe": gateway.reachability(),
        "api_version": {"ok": True, "configured": gateway.api_version},
    }
    for name, check in current_app.extensions.get(HEALTH_CHECKS, {}).items():
        sections[name] = check()
    ok = all(section.get("ok", True) for section in sections.values())
    return jsonify(status="ok" if ok else "degraded", **sections), 200 if ok else 503
