"""Which Stripe API versions are really in use, as seen by this service.

Two sources feed the weekly check:
- responses: every Stripe attempt's record (`stripe_calls.stripe_version`, by
  the gateway) over the last 30 days, shared by all processes; plus what this
  process's health probes saw (`record_response_version`, in memory, told by
  the gateway).
- webhook events: kamiyo/event_versions.py asks the sources that features
  registered there.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import func, select

from ..extensions import db
from ..models import utcnow
from ..stripe_gateway.gateway import on_response_version
from ..stripe_gateway.models import StripeCall

RESPONSES_KEY = "versioning_response_versions"


class ResponseVersions:
    """Stripe-Version values seen on responses: count and last seen, per version."""

    MAX_VERSIONS = 32  # a misbehaving proxy cannot grow this without bound

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}

    def record(self, version: str, at: dt.datetime) -> None:
        with self._lock:
            entry = self._seen.get(version)
            if entry is None:
                if len(self._seen) >= self.MAX_VERSIONS:
                    return
                entry = self._seen[version] = {"count": 0, "last_seen": at}
            entry["count"] += 1
            entry["last_seen"] = at

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {v: {"count": e["count"], "last_seen": e["last_seen"].isoformat()} for v, e in self._seen.items()}


def init_app(app: Flask) -> None:
    app.extensions[RESPONSES_KEY] = ResponseVersions()
    on_response_version(app, record_response_version)


def record_response_version(version: str | None) -> None:
    """Told by the gateway each health probe's Stripe-Version header."""
    if not version or not has_app_context():
        return
    recorder = current_app.extensions.get(RESPONSES_KEY)
    if recorder is not None:
        recorder.record(version.strip()[:64], utcnow())


RESPONSE_WINDOW = dt.timedelta(days=30)


def response_versions(now: dt.datetime | None = None) -> dict[str, dict[str, Any]]:
    """Every process's Stripe calls of the last 30 days (the stripe_calls records,
    so the scheduler process sees the web workers' traffic too), plus what this
    process's health probes saw."""
    since = (now or utcnow()) - RESPONSE_WINDOW
    rows = db.session.execute(
        select(StripeCall.stripe_version, func.count(), func.max(StripeCall.created_at))
        .where(StripeCall.created_at >= since, StripeCall.stripe_version.is_not(None))
        .group_by(StripeCall.stripe_version)
    ).all()
    seen: dict[str, dict[str, Any]] = {
        str(version): {"count": count, "last_seen": last.isoformat()} for version, count, last in rows
    }
    recorder = current_app.extensions.get(RESPONSES_KEY)
    for version, entry in (recorder.snapshot() if recorder is not None else {}).items():
        merged = seen.setdefault(version, {"count": 0, "last_seen": entry["last_seen"]})
        merged["count"] += entry["count"]
        merged["last_seen"] = max(merged["last_seen"], entry["last_seen"])
    return seen
