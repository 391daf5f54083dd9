"""One JSON error shape for the API, HTML error pages for everything else.

Every error carries a support id (the sanitised correlation id). No stack
trace, SQL, Stripe message or secret ever reaches a response.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from .observability.request_context import current_request_id
from .stripe_gateway.errors import CircuitOpenError, client_details, map_stripe_error
from .stripe_gateway.library import StripeError

log = logging.getLogger(__name__)

# Paths answered in JSON; everything else (the dashboard, login) gets HTML.
JSON_PREFIXES = ("/api/", "/health", "/metrics")

# code, message, user_action for the HTTP errors Flask itself raises.
HTTP_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "The request could not be understood.", "Check the request body and try again."),
    401: ("unauthorized", "Authentication is required.", "Send a valid API key as 'Authorization: Bearer <key>'."),
    403: ("forbidden", "You are not allowed to do this.", "Ask an administrator for access."),
    404: ("not_found", "Nothing was found at this address.", "Check the URL."),
    405: ("method_not_allowed", "This method is not allowed here.", "Use one of the methods in the Allow header."),
    409: ("conflict", "The request conflicts with another one in progress.", "Retry in a moment."),
    413: ("payload_too_large", "The request body is too large.", "Send a smaller body."),
    415: ("unsupported_media_type", "The request body must be JSON.", "Send 'Content-Type: application/json'."),
    422: ("unprocessable", "The request could not be processed.", "Check the request and try again."),
    429: ("rate_limited", "Too many requests.", "Wait before retrying (see Retry-After)."),
    500: (
        "internal_error",
        "Something went wrong on our side.",
        "Try again later; contact support with the support id if it persists.",
    ),
    502: ("bad_gateway", "An upstream service failed.", "Try again later."),
    503: ("service_unavailable", "The service is temporarily unavailable.", "Try again in a minute."),
}

# Headers of an HTTP error worth passing on to the client.
PASSED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiError(Exception):
    """An error our own code raises, answered in the JSON shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        user_action: str | None = None,
        *,
        fields: Iterable[str] | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.user_action = user_action or HTTP_ERRORS.get(status, HTTP_ERRORS[500])[2]
        self.fields = sorted(fields) if fields else None
        self.headers = headers or {}
        self.param = param  # the request field (or header) at fault, as Stripe names it
        self.extra = extra or {}  # more client-safe details (the rule each field broke...)


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES)


def json_error(
    status: int,
    code: str,
    message: str,
    user_action: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
):
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "user_action": user_action,
        "support_id": current_request_id(),
    }
    if extra:
        body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _html_error(status: int, message: str, user_action: str, headers=None):
    html = render_template(
        "errors/error.html",
        status=status,
        message=message,
        user_action=user_action,
        support_id=current_request_id(),
    )
    return html, status, headers or {}


def _respond(status: int, code: str, message: str, user_action: str, headers=None, extra=None):
    if wants_json():
        return json_error(status, code, message, user_action, headers, extra)
    return _html_error(status, message, user_action, headers)


def handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    code, message, user_action = HTTP_ERRORS.get(status, HTTP_ERRORS[500])
    headers = dict(exc.get_headers())
    passed = {name: headers[name] for name in PASSED_HEADERS if headers.get(name)}
    return _respond(status, code, message, user_action, passed)


def handle_api_error(exc: ApiError):
    extra: dict[str, Any] = {"fields": exc.fields} if exc.fields else {}
    if exc.param:
        extra["param"] = exc.param
    extra.update(exc.extra)
    return _respond(exc.status, exc.code, exc.message, exc.user_action, exc.headers, extra or None)


def handle_stripe_error(exc: Exception):
    mapped = map_stripe_error(exc, current_request_id(), support_contact=current_app.config.get("SUPPORT_CONTACT"))
    log.warning("stripe error mapped to %s", mapped["error_code"], extra={"error_type": type(exc).__name__})
    headers = None
    retry_after = getattr(exc, "retry_after", None) if isinstance(exc, CircuitOpenError) else None
    if retry_after is not None:
        # Whole seconds, rounded up: a caller that comes back on time finds the probe allowed.
        headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
    return _respond(
        mapped["http_status"],
        mapped["error_code"],
        mapped["message"],
        mapped["user_action"],
        headers,
        extra=client_details(exc) or None,
    )


def handle_unexpected(exc: Exception):
    # The traceback goes to the (redacted) log only, never to the client.
    log.exception("unhandled error")
    code, message, user_action = HTTP_ERRORS[500]
    return _respond(500, code, message, user_action)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(StripeError, handle_stripe_error)
    app.register_error_handler(CircuitOpenError, handle_stripe_error)
    app.register_error_handler(Exception, handle_unexpected)
