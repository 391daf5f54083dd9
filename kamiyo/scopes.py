"""API key scopes: what a key may do, as Stripe's restricted keys.

A key made without scopes is a full key (every scope, including any added later); a key
with scopes is restricted to them. A key without the scope a route needs answers 403
`insufficient_scope`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from .http_errors import ApiError

PAYMENTS_READ = "payments:read"  # GET customers and subscriptions
PAYMENTS_WRITE = "payments:write"  # create, update and cancel
OPS_READ = "ops:read"  # /api/v1/ops/* and the detail of /api/v1/payments/health
SCOPES = (PAYMENTS_READ, PAYMENTS_WRITE, OPS_READ)
FULL = "full"  # how a key without scopes is shown


def normalise(scopes: Iterable[str]) -> str | None:
    """The stored form of `scopes` (known ones only, sorted, deduplicated); None when none
    are given, a full key. ValueError names an unknown scope."""
    found = set()
    for scope in scopes:
        scope = scope.strip()
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope[:64]!r}; scopes: {', '.join(SCOPES)}")
        found.add(scope)
    return " ".join(sorted(found)) if found else None


def granted(stored: str | None) -> frozenset[str]:
    return frozenset(SCOPES) if stored is None else frozenset(stored.split())


def describe(stored: str | None) -> str:
    return FULL if stored is None else ", ".join(stored.split())


def insufficient_scope(scope: str) -> ApiError:
    return ApiError(
        403,
        "insufficient_scope",
        f"This API key does not have the {scope} scope.",
        f"Use a key with the {scope} scope (flask --app wsgi api-keys create NAME --scope {scope}).",
        headers={"WWW-Authenticate": f'Bearer realm="kamiyo", error="insufficient_scope", scope="{scope}"'},
    )


_DURATION = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
MAX_LIFETIME = dt.timedelta(days=3650)


def parse_duration(text: str) -> dt.timedelta:
    """'90d', '12h' or '30m' as a timedelta; ValueError otherwise (at most ten years)."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text[:32]!r} is not a duration: use a number and d, h or m (90d, 12h, 30m)")
    delta = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if delta > MAX_LIFETIME:
        raise ValueError("an expiry is at most 3650 days away")
    return delta
