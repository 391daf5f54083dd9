"""The dashboard's pages: read the query string, call the features' queries, render."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import login_required

from .. import api_keys, audit, openapi, scopes
from ..control_chars import has_control
from ..listing import RANGES, time_range
from ..models import utcnow
from ..payments import queries as payments
from ..scheduler import queries as jobs
from ..stripe_gateway import queries as stripe_calls
from ..stripe_gateway.gateway import get_gateway
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks
from . import summary
from .charts import line_chart
from .forms import ConfirmForm, NewApiKeyForm

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")


@bp.before_request
@login_required
def _signed_in() -> None:
    """Every page needs a session; an anonymous visitor goes to /login?next=..."""


def no_store(response):
    # Operational data (and a new API key, shown once) stays out of shared caches and history.
    response.headers["Cache-Control"] = "no-store"
    return response


bp.after_request(no_store)


NAV = (
    ("dashboard.overview", "Overview"),
    ("dashboard.version", "Version health"),
    ("dashboard.stripe_calls_page", "Stripe calls"),
    ("dashboard.rate_limits", "Rate limits"),
    ("dashboard.webhook_events", "Webhooks"),
    ("dashboard.payments_page", "Payments"),
    ("dashboard.breaker", "Circuit breaker"),
    ("dashboard.jobs_page", "Scheduled jobs"),
    ("dashboard.api_keys_page", "API keys"),
    ("dashboard.audit_page", "Audit log"),
    ("dashboard.api_docs", "API"),
)


def chrome() -> dict:
    """The navigation and the status strip every dashboard page shows (local reads only)."""
    version = versioning.current()
    return {
        "nav_items": NAV,
        "strip": {
            "demo_mode": bool(current_app.config.get("DEMO_MODE")),
            "version": version["version"],
            "version_status": version["status"],
            "breaker": get_gateway().breaker.current_state,
        },
    }


bp.context_processor(chrome)


def _window():
    return time_range(request.args.get("range"))


@bp.get("/")
def overview():
    return render_template("dashboard/overview.html", s=summary.overview(), ranges=RANGES)


@bp.get("/version")
def version():
    return render_template(
        "dashboard/version.html",
        current=versioning.current(),
        latest=versioning.latest_check(),
        page=versioning.history(request.args),
        form=ConfirmForm(),
    )


@bp.get("/stripe-calls")
def stripe_calls_page():
    window = _window()
    page = stripe_calls.attempts(request.args, window)
    return render_template(
        "dashboard/stripe_calls.html",
        window=window,
        page=page,
        groups=stripe_calls.group_calls(page.rows),
        totals=stripe_calls.summary(window),
        outcomes=stripe_calls.OUTCOMES,
        chart=line_chart(stripe_calls.attempt_series(window), window, "Stripe attempts and retries", "attempts"),
    )


@bp.get("/rate-limits")
def rate_limits():
    window = _window()
    return render_template(
        "dashboard/rate_limits.html",
        window=window,
        page=webhooks.violations(request.args, window),
        total=webhooks.violation_count(window),
        top_ips=webhooks.top_clients(window, "client_ip"),
        top_agents=webhooks.top_clients(window, "user_agent"),
        chart=line_chart(webhooks.violation_series(window), window, "Rate-limit violations", "blocked requests"),
    )


@bp.get("/webhooks")
def webhook_events():
    window = _window()
    return render_template(
        "dashboard/webhooks.html",
        window=window,
        page=webhooks.events(request.args, window),
        counts=webhooks.event_counts(window),
        statuses=("processed", "ignored", "failed"),
        chart=line_chart(webhooks.outcome_series(window), window, "Webhook events by outcome", "events"),
    )


@bp.get("/webhooks/<event_id>")
def webhook_event(event_id: str):
    row = None if has_control(event_id) else webhooks.event(event_id[:255])
    if row is None:
        abort(404)
    return render_template(
        "dashboard/webhook_event.html", event=row, payload=webhooks.sanitised_payload(row), form=ConfirmForm()
    )


@bp.get("/payments")
def payments_page():
    return render_template(
        "dashboard/payments.html",
        page=payments.operations(request.args),
        states=payments.STATES,
        counts=payments.operation_counts(utcnow() - dt.timedelta(hours=24)),
        duplicate_count=payments.duplicate_flag_count(),
        dedup_hits=payments.dedup_hits(),
        duplicates=payments.duplicate_flags(),
        reconcile=payments.last_reconcile(),
        form=ConfirmForm(),
    )


@bp.get("/breaker")
def breaker():
    return render_template(
        "dashboard/breaker.html",
        breaker=summary.breaker_state(),
        transitions=get_gateway().breaker.transitions(),
        form=ConfirmForm(),
    )


@bp.get("/jobs")
def jobs_page():
    return render_template("dashboard/jobs.html", jobs=jobs.jobs(current_app), form=ConfirmForm())


@bp.get("/api-keys")
def api_keys_page():
    return render_template(
        "dashboard/api_keys.html",
        keys=api_keys.list_api_keys(),
        form=ConfirmForm(),
        new_form=NewApiKeyForm(),
        describe_scopes=scopes.describe,
        now=utcnow(),
    )


@bp.get("/audit")
def audit_page():
    return render_template("dashboard/audit.html", page=audit.entries(request.args), outcomes=audit.OUTCOMES)


@bp.get("/api")
def api_docs():
    spec = openapi.document()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    return render_template("dashboard/api.html", spec=spec, operations=operations, codes=openapi.documented_codes(spec))
