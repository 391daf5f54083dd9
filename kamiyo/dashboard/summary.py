"""The overview's numbers, composed from each feature's queries: the overview page and
GET /api/v1/ops/summary both show this one dict."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app

from ..listing import time_range
from ..models import utcnow
from ..payments import queries as payments
from ..scheduler import queries as jobs
from ..stripe_gateway import queries as stripe_calls
from ..stripe_gateway.gateway import get_gateway
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks

DAY = dt.timedelta(hours=24)


def breaker_state() -> dict[str, Any]:
    breaker = get_gateway().breaker
    return {
        "state": breaker.current_state,
        "failures": breaker.failures(),
        "fail_max": breaker.fail_max,
        "reset_timeout_seconds": breaker.reset_timeout,
    }


def overview(now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    since = now - DAY
    day = time_range("24h", now)
    version = versioning.current()
    latest = versioning.latest_check()
    calls = stripe_calls.summary(day)
    return {
        "generated_at": now.isoformat(),
        "demo_mode": bool(current_app.config.get("DEMO_MODE")),
        "version": {
            "configured": version["version"],
            "status": version["status"],
            "age_days": version["age_days"],
            "last_check_status": latest.status if latest else None,
            "last_check_at": latest.checked_at.isoformat() if latest else None,
            "mismatches": len(latest.mismatches) if latest else 0,
        },
        "breaker": breaker_state(),
        "payments": {
            **webhooks.payment_success(since),
            "operations": payments.operation_counts(since),
            "dedup_hits": payments.dedup_hits(),
            "duplicate_subscriptions": payments.duplicate_flag_count(),
        },
        "stripe_calls_24h": calls,
        "rate_limit_violations_24h": webhooks.violation_count(day),
        "webhooks": {
            "last_24h": webhooks.event_counts(day),
            "failed": webhooks.failed_total(),
            "duplicate_deliveries": webhooks.duplicate_deliveries(),
        },
        "jobs": [
            {
                "name": job["name"],
                "next_run": job["next_run"].isoformat() if job["next_run"] else None,
                "last_status": job["runs"][0].status if job["runs"] else None,
                "last_started_at": job["runs"][0].started_at.isoformat() if job["runs"] else None,
            }
            for job in jobs.jobs(current_app, now)
        ],
    }
