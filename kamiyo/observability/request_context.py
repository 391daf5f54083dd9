"""Correlation id and request log line for every request."""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request

from ..control_chars import control_re
from .correlation import sanitize_correlation_id

log = logging.getLogger("kamiyo.request")

HEADER = "X-Request-ID"
USER_AGENT_MAX = 256  # characters of the User-Agent kept in the log line


def escape_user_agent(value: str | None) -> str:
    """The client's User-Agent for the log: each control character as its \\xNN escape (so
    a CR/LF cannot forge a line, and what was sent stays readable), then cut to
    USER_AGENT_MAX characters."""
    # Cut before escaping too: a header may be kilobytes long, and only the start is kept.
    kept = (value or "")[:USER_AGENT_MAX]
    escaped = control_re().sub(lambda m: "".join(f"\\x{ord(c):02x}" for c in m.group()), kept)
    return escaped[:USER_AGENT_MAX]


def outcome(status: int) -> str:
    """The request's outcome in one word, for audit queries over the log."""
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "forbidden", 429: "rate_limited"}.get(
        status, "client_error" if status < 500 else "server_error"
    )


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
                    "outcome": outcome(response.status_code),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    # After ProxyFix: the client, when TRUSTED_PROXY_COUNT says who to believe.
                    "client_ip": request.remote_addr,
                    "user_agent": escape_user_agent(request.headers.get("User-Agent")),
                    # The key's row id only, never the key: set once a key was accepted.
                    "api_key_id": g.get("api_key_id"),
                },
            )
        return response


def current_request_id() -> str:
    """The request's correlation id (or a fresh one outside a request)."""
    from flask import has_request_context

    if has_request_context() and g.get("request_id"):
        return g.request_id
    return sanitize_correlation_id(None)
