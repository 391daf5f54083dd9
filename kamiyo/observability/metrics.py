"""GET /metrics in Prometheus text format.

Each feature defines its own metrics once, at module level, in its own
`metrics.py` (prometheus_client refuses duplicates). Under gunicorn with
several workers, set PROMETHEUS_MULTIPROC_DIR (make run does) so every
worker's numbers are summed into one answer.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from ..auth_failures import check_blocked, refuse
from ..bearer import bearer_token, unauthorized

bp = Blueprint("metrics", __name__)

_REFRESHERS = "metrics_refreshers"


def refresh_before_scrape(app: Flask, refresh: Callable[[], None]) -> None:
    """Run `refresh()` before each scrape: for a gauge of state that every worker shares (in
    Redis), which a worker would otherwise set only when it sees that state change itself."""
    app.extensions.setdefault(_REFRESHERS, []).append(refresh)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@bp.get("/metrics")
def metrics():
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        check_blocked("metrics_token")
        given = bearer_token()
        if given is None:
            raise refuse("metrics_token", "no token", unauthorized("metrics", "metrics token", "METRICS_TOKEN"))
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise refuse(
                "metrics_token",
                "wrong token",
                unauthorized("metrics", "metrics token", "METRICS_TOKEN", invalid="wrong token"),
            )
    for refresh in current_app.extensions.get(_REFRESHERS, ()):
        refresh()
    # generate_latest writes the classic text format (0.0.4), the one every Prometheus reads, and
    # prometheus_client's own exporters announce it so when the scraper does not negotiate.
    # content_type, not mimetype: Flask would append a second "; charset=utf-8" to a mimetype.
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_PLAIN_0_0_4)
