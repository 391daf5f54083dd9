"""Reads of the Stripe API version's health, for the dashboard and the ops API alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from ..extensions import db
from ..listing import Page, paginate, text_filter
from .jobs import VERSION_CHECK_JOB
from .models import VersionCheck
from .monitor import get_version_monitor

RUN_JOB = VERSION_CHECK_JOB  # the scheduled job the dashboard's "run the check now" starts
STATUSES = ("ok", "warning", "critical", "unknown")


def current() -> dict[str, Any]:
    """The configured version's age and status now (local: no network, no database)."""
    return get_version_monitor().check_version_health()


def latest_check() -> VersionCheck | None:
    return db.session.scalar(select(VersionCheck).order_by(VersionCheck.id.desc()).limit(1))


def history(args: Mapping[str, str]) -> Page:
    status = text_filter(args, "status", STATUSES)
    query = select(VersionCheck)
    if status:
        query = query.where(VersionCheck.status == status)
    page = paginate(query, VersionCheck.id, args)
    page.filters = {"status": status} if status else {}
    return page


def serialise_check(row: VersionCheck) -> dict[str, Any]:
    return {
        "id": row.id,
        "checked_at": row.checked_at.isoformat(),
        "source": row.source,
        "configured_version": row.configured_version,
        "library_version": row.library_version,
        "age_days": row.age_days,
        "age_status": row.age_status,
        "status": row.status,
        "message": row.message,
        "remote": row.remote,
        "mismatches": row.mismatches,
    }
