"""GET /metrics in Prometheus text format.

Each feature defines its own metrics once, at module level, in its own
`metrics.py` (prometheus_client refuses duplicates). Under gunicorn with
several workers, set PROMETHEUS_MULTIPROC_DIR (make run does) so every
worker's numbers are summed into one answer.
"""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from ..bearer import bearer_token, unauthorized

bp = Blueprint("metrics", __name__)


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
        given = bearer_token()
        if given is None:
            raise unauthorized("metrics", "metrics token", "METRICS_TOKEN")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise unauthorized("metrics", "metrics token", "METRICS_TOKEN", invalid="wrong token")
    return Response(generate_latest(_registry()), mimetype=CONTENT_TYPE_LATEST)
