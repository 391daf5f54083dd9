"""Correlation id and request log line for every request."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from .correlation import sanitize_correlation_id

log = logging.getLogger("kamiyo.request")

HEADER = "X-Request-ID"


def init_app(app: Flask) -> None:
    @app.before_request
    def assign_correlation_id() -> None:
        # Sanitised before anything else sees it: it is echoed to clients,
        # shown as the support id and written to every log line.
        g.request_id = sanitize_correlation_id(request.headers.get(HEADER))
        g.request_started = time.perf_counter()

    @app.after_request
    def echo_correlation_id(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[HEADER] = request_id
        started = g.get("request_started")
        if started is not None:
            log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        return response


def current_request_id() -> str:
    """The request's correlation id (or a fresh one outside a request)."""
    from flask import has_request_context

    if has_request_context() and g.get("request_id"):
        return g.request_id
    return sanitize_correlation_id(None)
