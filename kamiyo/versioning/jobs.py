"""The full version check: local health + what Stripe and our webhooks really use.

Run weekly by the scheduler (Monday 09:00 in SCHEDULER_TIMEZONE), by
`flask stripe-version check`, and by the alert evaluation when the age status
changes. Every run is stored in `version_checks`; alerts go out on warning or
critical (a transition, or once a week while it lasts) and on each new mismatch.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from flask import Flask, current_app
from sqlalchemy.exc import SQLAlchemyError

from .. import scheduler
from ..event_versions import webhook_event_versions
from ..extensions import db
from ..health import register_health_check
from ..models import utcnow
from ..observability.alerts import send_alert
from ..stripe_gateway.gateway import get_gateway
from . import metrics, observed
from .models import VersionCheck
from .monitor import LIBRARY_API_VERSION, SEVERITY, get_version_monitor, status_message, version_base

log = logging.getLogger("kamiyo.versioning")

VERSION_CHECK_JOB = "stripe-version-check"
EVENT_WINDOW_DAYS = 30  # as long as Stripe's Events API keeps events
STATUS_REMINDER = dt.timedelta(days=6)  # a lasting warning is re-alerted by the next weekly check
NEW_MISMATCH_WINDOW = dt.timedelta(days=30)

ENDPOINT_ACTION = (
    "Webhook endpoints keep the API version they were created with: create a new endpoint "
    "with api_version={expected} (Stripe dashboard or API), move the traffic to it, then delete the old one."
)


def _mismatch(source: str, found: str, expected: str, message: str, action: str, **extra) -> dict[str, Any]:
    key = ":".join([source, *([extra["endpoint_id"]] if "endpoint_id" in extra else []), found])
    return {
        "key": key,
        "source": source,
        "found": found,
        "expected": expected,
        "message": message,
        "action": action,
        **extra,
    }


def find_mismatches(
    configured: str,
    library: str,
    responses: dict[str, dict] | None,
    events: dict[str, int] | None,
    endpoints: list[dict] | None,
) -> list[dict[str, Any]]:
    """Every place whose version differs from the configured one (beta flags ignored)."""
    expected = version_base(configured)
    found: list[dict[str, Any]] = []
    if version_base(library) != expected:
        found.append(
            _mismatch(
                "library",
                library,
                configured,
                f"Configured API version {configured} differs from {library}, the version stripe-python pins.",
                f"Set STRIPE_API_VERSION to {library} after reading the changelog, or pin a stripe-python "
                "release that pins the configured version (its objects are typed for its own version).",
            )
        )
    for version, seen in sorted((responses or {}).items()):
        if version_base(version) != expected:
            found.append(
                _mismatch(
                    "responses",
                    version,
                    configured,
                    f"Stripe answered {seen['count']} request(s) with Stripe-Version {version}, "
                    f"not the configured {configured}.",
                    "Check that every Stripe client is built with STRIPE_API_VERSION (kamiyo/stripe_gateway/gateway.py).",
                    count=seen["count"],
                )
            )
    for version, count in sorted((events or {}).items()):
        if version_base(version) != expected:
            found.append(
                _mismatch(
                    "webhook_events",
                    version,
                    configured,
                    f"{count} webhook event(s) in the last {EVENT_WINDOW_DAYS} days carry api_version "
                    f"{version}, not the configured {configured}.",
                    ENDPOINT_ACTION.format(expected=configured),
                    count=count,
                )
            )
    for endpoint in endpoints or []:
        endpoint_version = endpoint.get("api_version")
        if endpoint_version and version_base(endpoint_version) != expected:
            found.append(
                _mismatch(
                    "webhook_endpoint",
                    endpoint_version,
                    configured,
                    f"Webhook endpoint {endpoint['id']} is pinned to api_version {endpoint_version}, "
                    f"not the configured {configured}.",
                    ENDPOINT_ACTION.format(expected=configured),
                    endpoint_id=endpoint["id"],
                )
            )
    return found


def _observe(now: dt.datetime, remote: bool) -> tuple[dict[str, Any], dict | None, dict | None, list | None]:
    """What is in use: (report, response versions, event versions, webhook endpoints)."""
    since = now - dt.timedelta(days=EVENT_WINDOW_DAYS)
    seen: dict[str, Any] = {"library_version": LIBRARY_API_VERSION}
    endpoints: list[dict] | None = None
    if remote:
        try:
            endpoints = get_gateway().list_webhook_endpoints()
            seen["webhook_endpoints"] = (
                {"status": "unverified", "reason": "this Stripe has no webhook-endpoints API"}
                if endpoints is None
                else {"status": "verified", "endpoints": endpoints}
            )
        except Exception as exc:  # noqa: BLE001 -- the gateway owns Stripe's error types
            log.warning("version check: listing webhook endpoints failed: %s", type(exc).__name__)
            seen["webhook_endpoints"] = {"status": "unverified", "reason": f"error: {type(exc).__name__}"}
    else:
        seen["webhook_endpoints"] = {"status": "unverified", "reason": "local check (Stripe not asked)"}
    # After the endpoint listing, so its own response's Stripe-Version counts too.
    responses = observed.response_versions()
    seen["responses"] = (
        {"status": "verified", "versions": responses}
        if responses
        else {"status": "unverified", "reason": "no Stripe response recorded in the last 30 days"}
    )
    try:
        events = webhook_event_versions(since)
        seen["webhook_events"] = (
            {"status": "unverified", "reason": "no webhook event source is wired"}
            if events is None
            else {"status": "verified", "since": since.isoformat(), "versions": events}
        )
    except Exception as exc:  # noqa: BLE001 -- e.g. the inbox table is not migrated yet
        db.session.rollback()
        log.warning("version check: reading webhook events' versions failed: %s", type(exc).__name__)
        events = None
        seen["webhook_events"] = {"status": "unverified", "reason": f"error: {type(exc).__name__}"}
    return seen, responses, events, endpoints


def _previous_check() -> VersionCheck | None:
    return db.session.execute(
        db.select(VersionCheck).order_by(VersionCheck.checked_at.desc(), VersionCheck.id.desc()).limit(1)
    ).scalar_one_or_none()


def _recent_mismatch_keys(now: dt.datetime) -> set[str]:
    rows = db.session.execute(
        db.select(VersionCheck.mismatches).where(VersionCheck.checked_at >= now - NEW_MISMATCH_WINDOW)
    ).scalars()
    return {m.get("key") for mismatches in rows for m in (mismatches or [])}


def check(*, remote: bool = True, now: dt.datetime | None = None) -> dict[str, Any]:
    """Local health plus what is in use; nothing stored (see run_version_check)."""
    now = now or utcnow()
    health = get_version_monitor().check_version_health(now=now)
    seen, responses, events, endpoints = _observe(now, remote)
    configured = current_app.config["STRIPE_API_VERSION"] or ""
    mismatches = find_mismatches(configured, LIBRARY_API_VERSION, responses, events, endpoints)
    health.update(
        age_status=health["status"],
        library_version=LIBRARY_API_VERSION,
        remote=remote,
        observed=seen,
        mismatches=mismatches,
    )
    if mismatches and SEVERITY[health["status"]] < SEVERITY["warning"]:
        health["status"] = "warning"
        health["message"] = (
            f"WARNING: API version {configured} is {health['age_days']} days old, but "
            f"{len(mismatches)} version mismatch(es) were found: " + "; ".join(m["message"] for m in mismatches)
        )
    return health


def run_version_check(
    source: str, *, remote: bool = True, now: dt.datetime | None = None, store: bool = True
) -> dict[str, Any]:
    """check(), then store the row, publish the metrics and send the alerts."""
    now = now or utcnow()
    result = check(remote=remote, now=now)
    metrics.publish(result["age_status"], result["age_days"])
    metrics.VERSION_MISMATCHES.set(len(result["mismatches"]))
    if not store:
        return result
    try:
        previous = _previous_check()
        recent_keys = _recent_mismatch_keys(now)
        db.session.add(
            VersionCheck(
                checked_at=now,
                source=source,
                configured_version=(result["version"] or "")[:128],
                library_version=LIBRARY_API_VERSION,
                version_date=dt.date.fromisoformat(result["version_date"]) if result["version_date"] else None,
                age_days=result["age_days"],
                age_status=result["age_status"],
                status=result["status"],
                message=result["message"],
                remote=remote,
                mismatches=result["mismatches"],
                observed=result["observed"],
            )
        )
        db.session.commit()
    except SQLAlchemyError as exc:
        db.session.rollback()
        log.error("version check not stored: %s", type(exc).__name__)
        result["stored"] = False
        return result
    result["stored"] = True
    _alert(result, previous, recent_keys, now)
    return result


def _alert(result: dict[str, Any], previous: VersionCheck | None, recent_keys: set[str], now: dt.datetime) -> None:
    version, age_status = result["version"], result["age_status"]
    if age_status != "healthy":
        if previous is None or previous.age_status != age_status or previous.checked_at <= now - STATUS_REMINDER:
            severity = "critical" if age_status == "critical" else "warning"
            text = (
                result["message"]
                if age_status == "unknown"
                else status_message(version, result["age_days"], age_status)
            )
            recommendation = result["recommendation"]
            send_alert(
                f"Stripe API version {age_status}",
                f"{text} {recommendation['action']} {recommendation['upgrade_guide_url']}",
                severity=severity,
                dedup_key=f"stripe-version:{age_status}:{version}",
                fields={"version": version, "age_days": result["age_days"]},
            )
    for mismatch in result["mismatches"]:
        if mismatch["key"] not in recent_keys:
            send_alert(
                "Stripe API version mismatch",
                f"{mismatch['message']} {mismatch['action']}",
                severity="warning",
                dedup_key=f"stripe-version:mismatch:{mismatch['key']}",
                fields={"configured": mismatch["expected"], "found": mismatch["found"], "source": mismatch["source"]},
            )


def version_alert_check() -> None:
    """Every few minutes: refresh the metrics, and when the age status has changed
    since the last stored check (e.g. the version just turned 180 days old), run
    and store a local check, which alerts."""
    health = get_version_monitor().check_version_health()
    metrics.publish(health["status"], health["age_days"])
    previous = _previous_check()
    if (
        previous is None
        or previous.age_status != health["status"]
        or previous.configured_version != (health["version"] or "")[:128]
    ):
        run_version_check("alert-evaluation", remote=False)


def health_section() -> dict[str, Any]:
    """The payments health answer's api_version part (local, no network, no database).
    An old version never turns the health answer into a 503: the service works; the
    status and alerts say it needs an upgrade."""
    health = get_version_monitor().check_version_health()
    return {
        "ok": True,
        "configured": health["version"],
        "status": health["status"],
        "version_date": health["version_date"],
        "age_days": health["age_days"],
        "message": health["message"],
        "latest_known": LIBRARY_API_VERSION,
    }


def init_app(app: Flask) -> None:
    observed.init_app(app)
    register_health_check(app, "api_version", health_section)
    scheduler.register_alert_check(app, "stripe_api_version", version_alert_check)
    scheduler.register_job(
        app,
        VERSION_CHECK_JOB,
        scheduler.weekly_trigger(app.config["SCHEDULER_TIMEZONE"]),
        lambda: run_version_check("scheduler"),
        scheduler.iso_week,
    )
