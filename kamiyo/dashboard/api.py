"""GET /api/v1/ops/...: the dashboard's numbers as JSON, with a Bearer API key.

The same query functions as the pages, with the same query-string filters, so a number on
a page and in its JSON twin cannot disagree.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from ..api_keys import request_key
from ..listing import DEFAULT_RANGE, FILTER_MAX, RANGES, Page, TimeRange, same_page, time_range
from ..openapi import UNAUTHORIZED, errors, json_response, query_param
from ..scheduler import queries as jobs
from ..scopes import OPS_READ
from ..stripe_gateway import queries as stripe_calls
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks
from . import summary

bp = Blueprint("ops_api", __name__, url_prefix="/api/v1/ops")


@bp.before_request
def _api_key() -> None:
    """Every ops endpoint needs an API key with ops:read (401 JSON without one, 403
    insufficient_scope without the scope)."""
    request_key(OPS_READ)


def _listing(page: Page, rows: list[dict[str, Any]], window: TimeRange | None = None):
    body: dict[str, Any] = {"data": rows, "filters": page.filters}
    if window is not None:
        body["range"] = {"name": window.name, "start": window.start.isoformat(), "end": window.end.isoformat()}
    body["next"] = same_page(request.path, request.args, before=page.older) if page.older else None
    body["previous"] = same_page(request.path, request.args, after=page.newer) if page.newer else None
    return jsonify(body)


@bp.get("/summary")
def summary_json():
    return jsonify(summary.overview())


@bp.get("/version-health")
def version_health():
    latest = versioning.latest_check()
    page = versioning.history(request.args)
    return jsonify(
        {
            "current": versioning.current(),
            "latest_check": versioning.serialise_check(latest) if latest else None,
            "history": [versioning.serialise_check(row) for row in page.rows],
            "next": same_page(request.path, request.args, before=page.older) if page.older else None,
        }
    )


@bp.get("/stripe-calls")
def stripe_calls_json():
    window = time_range(request.args.get("range"))
    page = stripe_calls.attempts(request.args, window)
    return _listing(page, [stripe_calls.serialise(row) for row in page.rows], window)


@bp.get("/rate-limit-violations")
def violations_json():
    window = time_range(request.args.get("range"))
    page = webhooks.violations(request.args, window)
    return _listing(page, [webhooks.serialise_violation(row) for row in page.rows], window)


@bp.get("/webhook-events")
def webhook_events_json():
    window = time_range(request.args.get("range"))
    page = webhooks.events(request.args, window)
    return _listing(page, [webhooks.serialise_event(row) for row in page.rows], window)


@bp.get("/jobs")
def jobs_json():
    return jsonify({"data": [jobs.serialise_job(job) for job in jobs.jobs(current_app)]})


# -- the ops endpoints in GET /api/v1/openapi.json ------------------------------------
# Parameter names and closed sets from the query functions above (kamiyo/listing.py's filters).

_RANGE = query_param(
    "range", {"enum": list(RANGES), "default": DEFAULT_RANGE}, "The time window (an unknown one: invalid_range)."
)
_CURSORS = [
    query_param(name, {"type": "integer", "minimum": 1}, f"A row id: the page {side} it (follow next/previous).")
    for name, side in (("before", "older than"), ("after", "newer than"))
]
_LISTED = ((400, "invalid_filter"), (400, "invalid_cursor"))


def _filter(name: str, choices=None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": FILTER_MAX}
    if choices is not None:
        schema["enum"] = list(choices)
    return query_param(name, schema, f"Only rows with this {name} (exact).")


def _operation(name: str, summary: str, body: dict[str, Any], params=(), codes=()) -> dict[str, Any]:
    return {
        "get": {
            "operationId": name,
            "summary": summary,
            "tags": ["ops"],
            "parameters": list(params),
            "responses": {"200": json_response(summary + ".", body), **errors(UNAUTHORIZED, codes)},
        }
    }


def _list_body() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "filters": {"type": "object", "additionalProperties": {"type": "string"}},
            "range": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "start": {"type": "string", "format": "date-time"},
                    "end": {"type": "string", "format": "date-time"},
                },
            },
            "next": {"type": ["string", "null"], "description": "The older page's URL."},
            "previous": {"type": ["string", "null"], "description": "The newer page's URL."},
        },
    }


def openapi_paths() -> dict[str, dict[str, Any]]:
    prefix = bp.url_prefix
    listed = (*_LISTED, (400, "invalid_range"))
    return {
        f"{prefix}/summary": _operation("opsSummary", "The overview's numbers", {"type": "object"}),
        f"{prefix}/version-health": _operation(
            "opsVersionHealth",
            "The Stripe API version in use and its checks",
            {
                "type": "object",
                "properties": {
                    "current": {"type": "object"},
                    "latest_check": {"type": ["object", "null"]},
                    "history": {"type": "array", "items": {"type": "object"}},
                    "next": {"type": ["string", "null"]},
                },
            },
            [_filter("status", versioning.STATUSES), *_CURSORS],
            _LISTED,
        ),
        f"{prefix}/stripe-calls": _operation(
            "opsStripeCalls",
            "Calls to Stripe, newest first",
            _list_body(),
            [_RANGE, _filter("operation"), _filter("outcome", stripe_calls.OUTCOMES), _filter("error_type"), *_CURSORS],
            listed,
        ),
        f"{prefix}/rate-limit-violations": _operation(
            "opsRateLimitViolations",
            "Refused webhook senders, newest first",
            _list_body(),
            [_RANGE, _filter("client_ip"), _filter("endpoint"), *_CURSORS],
            listed,
        ),
        f"{prefix}/webhook-events": _operation(
            "opsWebhookEvents",
            "Stored webhook events, newest first",
            _list_body(),
            [_RANGE, _filter("status", webhooks.EVENT_STATUSES), _filter("type"), *_CURSORS],
            listed,
        ),
        f"{prefix}/jobs": _operation(
            "opsJobs",
            "Scheduled jobs and their last runs",
            {"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}},
        ),
    }
