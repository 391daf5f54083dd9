"""GET /api/v1/ops/...: the dashboard's numbers as JSON, with a Bearer API key.

The same query functions as the pages, with the same query-string filters, so a number on
a page and in its JSON twin cannot disagree.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from ..api_keys import require_api_key
from ..listing import Page, TimeRange, same_page, time_range
from ..scheduler import queries as jobs
from ..stripe_gateway import queries as stripe_calls
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks
from . import summary

bp = Blueprint("ops_api", __name__, url_prefix="/api/v1/ops")


@bp.before_request
@require_api_key
def _api_key() -> None:
    """Every ops endpoint needs an API key (401 JSON without one)."""


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
