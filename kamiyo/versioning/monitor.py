"""Stripe API version health: parse the pinned version, compute its age, grade it.

Versions look like `2023-10-16`, `2024-09-30.acacia`, `2026-10-28.endive`,
sometimes with `.preview` or a beta suffix (`; x_beta=v1`). The date is what
ages: at VERSION_WARNING_DAYS the status is `warning`, at VERSION_CRITICAL_DAYS
`critical`. Anything that does not parse is `unknown`, never a crash.

This module is pure (no database, no network): start-up uses it as it is, and
kamiyo/versioning/jobs.py adds what is really in use (responses, webhook events,
webhook endpoints) for the weekly check.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..models import utcnow
from ..stripe_gateway.library import LIBRARY_API_VERSION

log = logging.getLogger("kamiyo.versioning")

VERSION_WARNING_DAYS = 180  # ~6 months
VERSION_CRITICAL_DAYS = 365  # 1 year

# Stripe's named major releases since 2024; later ones parse too (any lowercase word).
KNOWN_CODENAMES = ("acacia", "basil", "clover", "dahlia", "endive")
CHANGELOG_URL = "https://docs.stripe.com/changelog"
UPGRADE_GUIDE_URL = "https://docs.stripe.com/upgrades"

STATUSES = ("healthy", "warning", "critical", "unknown")
SEVERITY = {"healthy": 0, "warning": 1, "critical": 2, "unknown": 3}

_VERSION_RE = re.compile(
    r"""
    (?P<date>\d{4}-\d{2}-\d{2})
    (?:\.(?P<codename>(?!preview\b)[a-z]+))?
    (?:\.(?P<preview>preview))?
    (?P<betas>(?:\s*;\s*[a-z0-9_]+=[A-Za-z0-9_.]+)*)
    \s*""",
    re.VERBOSE,
)


class VersionFormatError(ValueError):
    """The text is not a Stripe API version."""


@dataclass(frozen=True)
class ParsedVersion:
    raw: str
    date: dt.date
    codename: str | None
    preview: bool
    betas: tuple[str, ...]

    @property
    def base(self) -> str:
        """The version without beta flags: what Stripe reports on events and endpoints."""
        text = self.date.isoformat()
        if self.codename:
            text += f".{self.codename}"
        return text + (".preview" if self.preview else "")


def parse_version(raw: str | None) -> ParsedVersion:
    text = (raw or "").strip()
    match = _VERSION_RE.fullmatch(text)
    if not match:
        raise VersionFormatError("unrecognised format")
    try:
        date = dt.date.fromisoformat(match["date"])
    except ValueError:
        raise VersionFormatError(f"{match['date']} is not a calendar date") from None
    betas = tuple(part.strip() for part in match["betas"].split(";") if part.strip())
    return ParsedVersion(text, date, match["codename"], bool(match["preview"]), betas)


def version_base(raw: str | None) -> str:
    """Comparable form of a version: beta flags dropped; unparseable text as given."""
    try:
        return parse_version(raw).base
    except VersionFormatError:
        return (raw or "").strip()


def _shown(raw: str | None, limit: int = 64) -> str:
    text = (raw or "").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def grade(age_days: int, warning_days: int = VERSION_WARNING_DAYS, critical_days: int = VERSION_CRITICAL_DAYS) -> str:
    if age_days >= critical_days:
        return "critical"
    if age_days >= warning_days:
        return "warning"
    return "healthy"


def status_message(version: str, age_days: int, status: str) -> str:
    """The seed's log and CLI lines, word for word."""
    if status == "critical":
        return f"CRITICAL: API version {version} is {age_days} days old. Upgrade required immediately."
    if status == "warning":
        return f"WARNING: API version {version} is {age_days} days old. Plan upgrade soon."
    return f"Healthy: API version {version} is {age_days} days old."


class VersionMonitor:
    def __init__(
        self,
        version: str | None,
        *,
        warning_days: int = VERSION_WARNING_DAYS,
        critical_days: int = VERSION_CRITICAL_DAYS,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.version = version
        self.warning_days = warning_days
        self.critical_days = critical_days
        self._clock = clock

    def _parse_version_date(self) -> dt.datetime:
        """Midnight UTC of the version's release date (raises VersionFormatError)."""
        date = parse_version(self.version).date
        return dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)

    def check_version_health(self, now: dt.datetime | None = None) -> dict[str, Any]:
        now = now or self._clock()
        result: dict[str, Any] = {
            "version": self.version,
            "version_date": None,
            "age_days": None,
            "status": "unknown",
            "message": "",
            "codename": None,
            "preview": False,
            "checked_at": now.isoformat(),
            "thresholds": {"warning_days": self.warning_days, "critical_days": self.critical_days},
            "recommendation": self._recommendation(None),
        }
        if not (self.version or "").strip():
            result["message"] = "UNKNOWN: no Stripe API version is configured (set STRIPE_API_VERSION)."
            return result
        try:
            parsed = parse_version(self.version)
            released = self._parse_version_date()
        except VersionFormatError as exc:
            result["message"] = (
                f"UNKNOWN: API version {_shown(self.version)!r} is not a Stripe API "
                f"version ({exc}). Expected YYYY-MM-DD or YYYY-MM-DD.codename, "
                "optionally with '.preview' or '; x_beta=...'."
            )
            return result
        age_days = (now.astimezone(dt.UTC).date() - released.date()).days
        result.update(
            version_date=parsed.date.isoformat(),
            age_days=age_days,
            codename=parsed.codename,
            preview=parsed.preview,
            recommendation=self._recommendation(parsed),
        )
        if age_days < 0:
            result["message"] = (
                f"UNKNOWN: API version {self.version} is dated in the future "
                f"({-age_days} days ahead): check the version and the clock."
            )
            return result
        status = grade(age_days, self.warning_days, self.critical_days)
        result.update(status=status, message=status_message(self.version or "", age_days, status))
        return result

    def _recommendation(self, parsed: ParsedVersion | None) -> dict[str, Any]:
        latest = parse_version(LIBRARY_API_VERSION)
        newer_known = parsed is None or latest.date > parsed.date
        if parsed is None:
            action = f"Set STRIPE_API_VERSION to a Stripe API version, e.g. {LIBRARY_API_VERSION}."
        elif newer_known:
            action = (
                f"Upgrade to {LIBRARY_API_VERSION} (the version stripe-python pins): read the "
                "changelog for breaking changes, test, then set STRIPE_API_VERSION."
            )
        elif parsed.date == latest.date:
            action = (
                "This is the newest version this install knows; a newer one needs a newer "
                "stripe-python release (see the changelog)."
            )
        else:
            action = (
                f"The configured version is newer than the one stripe-python pins "
                f"({LIBRARY_API_VERSION}): upgrade stripe-python so its types match."
            )
        return {
            "latest_known": LIBRARY_API_VERSION,
            "upgrade_available": newer_known,
            "action": action,
            "changelog_url": CHANGELOG_URL,
            "upgrade_guide_url": UPGRADE_GUIDE_URL,
        }


def get_version_monitor(config=None) -> VersionMonitor:
    """The monitor for an app's configuration (the current app's by default)."""
    if config is None:
        from flask import current_app

        config = current_app.config
    return VersionMonitor(
        config.get("STRIPE_API_VERSION"),
        warning_days=int(config.get("VERSION_WARNING_DAYS", VERSION_WARNING_DAYS)),
        critical_days=int(config.get("VERSION_CRITICAL_DAYS", VERSION_CRITICAL_DAYS)),
    )


STARTUP_LEVELS = {
    "healthy": logging.INFO,
    "warning": logging.WARNING,
    "critical": logging.CRITICAL,
    "unknown": logging.WARNING,
}


def log_startup_version(config) -> dict[str, Any]:
    """Start-up: the local check only (no network, no database), one log line."""
    health = get_version_monitor(config).check_version_health()
    log.log(
        STARTUP_LEVELS[health["status"]],
        "[STRIPE VERSION] %s",
        health["message"],
        extra={
            "stripe_api_version": health["version"],
            "version_status": health["status"],
            "version_age_days": health["age_days"],
        },
    )
    return health
