"""`flask --app wsgi report --since 1h|1d|7d`: the checklist's first hour, day and week in
numbers, from the database (the same queries the dashboard reads), against its targets."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

from flask import current_app

from ..listing import TimeRange
from ..models import utcnow
from ..payments import queries as payments
from ..scheduler import queries as jobs
from ..stripe_gateway import queries as stripe_calls
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks
from .checks import FAIL, OK, WARN, Check

WINDOWS = {"1h": dt.timedelta(hours=1), "1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7)}
# The deployment checklist's targets.
SUCCESS_RATE_MIN = 0.99  # payment_success_rate > 99%
ERROR_RATE_MAX = 0.01  # payment_error_rate < 1%
RETRY_RATE_EXPECTED = (0.01, 0.05)  # payment_retry_rate: expect 1-5%
VIOLATIONS_PER_DAY = 5  # webhook_rate_limit_violations: expect 0-5 a day
RUNS_SHOWN = 3


def window(since: str, now: dt.datetime | None = None) -> TimeRange:
    end = (now or utcnow()).replace(microsecond=0)
    length = WINDOWS[since]
    return TimeRange(since, end - length, end, length)  # one bucket: the whole window


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def violations_allowed(length: dt.timedelta) -> int:
    """5 a day, scaled to the window and rounded up (an hour allows one)."""
    return math.ceil(VIOLATIONS_PER_DAY * length / dt.timedelta(days=1))


def build_report(since: str, now: dt.datetime | None = None) -> tuple[list[Check], dict[str, Any]]:
    span = window(since, now)
    found: list[Check] = []
    numbers: dict[str, Any] = {"window": {"since": since, "start": span.start, "end": span.end}}

    paid = webhooks.payment_success(span.start)
    numbers["payments"] = paid
    total = paid["succeeded"] + paid["failed"]
    if not total:
        found.append(Check("payment success rate", OK, "no traffic (no payment outcome in the window)"))
    else:
        rate = paid["succeeded"] / total
        line = f"{_percent(rate)} ({paid['succeeded']} of {total} payments succeeded; target > 99%)"
        if rate > SUCCESS_RATE_MIN:
            found.append(Check("payment success rate", OK, line))
        else:
            found.append(
                Check(
                    "payment success rate",
                    FAIL,
                    line,
                    "look at the failures: flask --app wsgi webhooks list --type payment_intent.payment_failed",
                )
            )

    calls = stripe_calls.summary(span)
    numbers["stripe_calls"] = calls
    if not calls["attempts"]:
        found.append(Check("error rate", OK, "no traffic (no Stripe call in the window)"))
        found.append(Check("retry rate", OK, "no traffic (no Stripe call in the window)"))
    else:
        attempts = calls["attempts"]
        error_rate, retry_rate = calls["errors"] / attempts, calls["retries"] / attempts
        line = f"{_percent(error_rate)} ({calls['errors']} of {attempts} Stripe attempts failed; target < 1%)"
        if error_rate < ERROR_RATE_MAX:
            found.append(Check("error rate", OK, line))
        else:
            found.append(
                Check("error rate", FAIL, line, "see which: /dashboard/stripe-calls?outcome=error (or the ops API)")
            )
        low, high = RETRY_RATE_EXPECTED
        line = f"{_percent(retry_rate)} ({calls['retries']} of {attempts} attempts were retries; expected 1-5%)"
        if retry_rate > high:
            found.append(
                Check(
                    "retry rate",
                    FAIL,
                    line,
                    "Stripe or the network is flaky: /dashboard/stripe-calls, status.stripe.com",
                )
            )
        else:
            found.append(Check("retry rate", OK, line + (" (below: fine)" if retry_rate < low else "")))

    found.append(_dedup_hits(numbers))

    blocked = webhooks.violation_count(span)
    allowed = violations_allowed(span.end - span.start)
    numbers["rate_limit_violations"] = {"blocked": blocked, "allowed": allowed}
    line = f"{blocked} blocked request(s) (expected at most {allowed} in {since}: 0-5 a day)"
    if blocked <= allowed:
        found.append(Check("rate-limit violations", OK, line))
    else:
        found.append(
            Check("rate-limit violations", FAIL, line, "see who: /dashboard/rate-limits (top IPs and user agents)")
        )

    # Only the live ones miss the target: a flagged duplicate cancelled on Stripe (the runbook's
    # fix) stays flagged in the table, and would block every release after it.
    duplicates = payments.live_duplicate_count()
    resolved = payments.duplicate_flag_count() - duplicates
    unlinked = payments.unlinked_customer_count()
    numbers["duplicate_subscriptions"] = duplicates
    numbers["duplicate_subscriptions_resolved"] = resolved
    numbers["customers_without_stripe_link"] = unlinked
    if duplicates:
        found.append(
            Check(
                "duplicate subscriptions",
                FAIL,
                f"{duplicates} flagged (target 0)"
                + (f"; {resolved} more no longer live: resolved" if resolved else ""),
                "flask --app wsgi payments reconcile --subscriptions prints each with the command that cancels it",
            )
        )
    else:
        found.append(
            Check(
                "duplicate subscriptions",
                OK,
                f"none live ({resolved} flagged, no longer live: resolved)" if resolved else "none flagged",
            )
        )
    found.append(
        Check(
            "customers without a Stripe link",
            OK,
            f"{unlinked} (deleted on Stripe, or their creation still under way)"
            if unlinked
            else "none (every customer has its Stripe customer)",
        )
    )

    found.append(_version_checks(span, numbers))
    return found, numbers


def _dedup_hits(numbers: dict[str, Any]) -> Check:
    # A counter, kept by the service's processes: readable here when they share their
    # multiprocess metrics folder with this command.
    from . import cli

    if cli.absent_metrics_dir:
        numbers["dedup_hits"] = None
        return Check(
            "dedup hits",
            WARN,
            f"not readable: PROMETHEUS_MULTIPROC_DIR {cli.absent_metrics_dir} does not exist on this host (the "
            "service creates it when it starts)",
            "run report where the service runs, with its PROMETHEUS_MULTIPROC_DIR, or read "
            "stripe_idempotency_dedup_total on /metrics",
        )
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        numbers["dedup_hits"] = None
        return Check(
            "dedup hits",
            OK,
            "not readable from this process (a counter of the service's: set PROMETHEUS_MULTIPROC_DIR as the "
            "service has it, or read stripe_idempotency_dedup_total on /metrics)",
        )
    hits = payments.dedup_hits()
    numbers["dedup_hits"] = hits
    return Check("dedup hits", OK, f"{hits} request(s) answered from an existing operation since the service started")


def _version_checks(span: TimeRange, numbers: dict[str, Any]) -> Check:
    name = "weekly version check"
    job = next((j for j in jobs.jobs(current_app, span.end) if j["name"] == versioning.RUN_JOB), None)
    runs = job["runs"][:RUNS_SHOWN] if job else []
    latest = versioning.latest_check()
    numbers["version_check"] = {
        "runs": [jobs.serialise_run(run) for run in runs],
        "latest_check": versioning.serialise_check(latest) if latest else None,
    }
    if not runs:
        return Check(
            name,
            WARN,
            "has never run",
            "is the scheduler running (kamiyo-scheduler.service, or the crontab line)? "
            "flask --app wsgi scheduler run-job stripe-version-check runs it now",
        )
    shown = ", ".join(f"{run.status} {run.started_at:%Y-%m-%d %H:%M}" for run in runs)
    line = f"last runs: {shown}"
    if latest is not None:
        line += f"; latest check {latest.status}"
    if runs[0].status == "failed":
        return Check(name, WARN, line, "see why: flask --app wsgi scheduler status; then run-job stripe-version-check")
    length = span.end - span.start
    if length >= dt.timedelta(days=7) and not any(run.status == "ok" and run.started_at >= span.start for run in runs):
        return Check(name, WARN, line + " (no successful run this week)", "flask --app wsgi scheduler status")
    if latest is not None and latest.status in ("warning", "critical"):
        return Check(name, WARN, line, "flask --app wsgi stripe-version check says what to do")
    return Check(name, OK, line)
