"""Which prices a subscription may use, with which tier, checked before anything is sent to
Stripe: no card is attached for a request that will fail.

With PRICE_TIERS (price id → tier), an unknown price or another tier is refused without
asking Stripe. Without it, the price is looked up on Stripe (GET /v1/prices/<id>) and the
answer kept for PRICE_CACHE_SECONDS (a missing price for MISSING_SECONDS, so that a price
made a moment later is soon usable); the tier is then the caller's word.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from ..config import ConfigError
from ..http_errors import ApiError
from ..stripe_gateway.errors import is_resource_missing
from ..stripe_gateway.gateway import get_gateway
from ..stripe_gateway.library import StripeError
from .fields import STRIPE_ID_RE, TIER_RE

TIERS = "payments_price_tiers"
CACHE = "payments_price_cache"
MISSING_SECONDS = 60.0
_PAIR = re.compile(r"^\s*([^=\s]+)\s*=\s*([^=\s]+)\s*$")


def parse_price_tiers(raw: Any) -> dict[str, str] | None:
    """PRICE_TIERS as a mapping (None: not set). From the environment: `price_a=pro,price_b=team`."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, str):
        pairs = []
        for item in raw.split(","):
            found = _PAIR.match(item)
            if not found:
                raise ConfigError(f"PRICE_TIERS: expected price_id=tier pairs separated by commas, not {item!r}")
            pairs.append((found.group(1), found.group(2)))
    else:
        raise ConfigError("PRICE_TIERS must be a mapping of price ids to tiers, or price_id=tier,...")
    tiers: dict[str, str] = {}
    for price, tier in pairs:
        if not (isinstance(price, str) and STRIPE_ID_RE.fullmatch(price)):
            raise ConfigError(f"PRICE_TIERS: {price!r} is not a Stripe price id")
        if not (isinstance(tier, str) and TIER_RE.fullmatch(tier)):
            raise ConfigError(f"PRICE_TIERS: the tier of {price} ({tier!r}) is not a valid tier")
        if price in tiers:
            raise ConfigError(f"PRICE_TIERS: {price} is listed twice")
        tiers[price] = tier
    return tiers


def init_app(app: Flask) -> None:
    app.extensions[TIERS] = parse_price_tiers(app.config.get("PRICE_TIERS"))
    app.extensions[CACHE] = PriceCache()


class PriceCache:
    """Price id → (known until, found on Stripe), for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, bool]] = {}

    def get(self, price_id: str) -> bool | None:
        with self._lock:
            entry = self._entries.get(price_id)
            if entry is None or entry[0] <= time.monotonic():
                self._entries.pop(price_id, None)
                return None
            return entry[1]

    def put(self, price_id: str, found: bool, seconds: float) -> None:
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: bogus ids must not grow it for ever
                self._entries.clear()
            self._entries[price_id] = (time.monotonic() + seconds, found)


def check_tier(price_id: str, tier: str) -> None:
    """With PRICE_TIERS: refuse an unknown price or another tier, without calling Stripe."""
    tiers = current_app.extensions[TIERS]
    if tiers is None:
        return
    if price_id not in tiers:
        raise price_not_found()
    if tiers[price_id] != tier:
        raise ApiError(
            400,
            "tier_mismatch",
            "This tier is not the tier of this price.",
            "Send the price's tier (see `expected_tier`), or the price of the tier you meant.",
            param="tier",
            extra={"expected_tier": tiers[price_id]},
        )


def check_on_stripe(price_id: str) -> None:
    """Without PRICE_TIERS: the price must exist on Stripe (looked up once, then cached)."""
    if current_app.extensions[TIERS] is not None:
        return
    cache: PriceCache = current_app.extensions[CACHE]
    found = cache.get(price_id)
    if found is None:
        try:
            price = get_gateway().retrieve_price(price_id)
        except StripeError as exc:
            if not is_resource_missing(exc):
                raise
            found = False
        else:
            found = bool(price.get("active", True))
        seconds = float(current_app.config["PRICE_CACHE_SECONDS"]) if found else MISSING_SECONDS
        cache.put(price_id, found, seconds)
    if not found:
        raise price_not_found()


def price_not_found() -> ApiError:
    return ApiError(
        400,
        "price_not_found",
        "There is no active price with this id.",
        "Check price_id: it must be an active price of the Stripe account this service uses.",
        param="price_id",
    )
