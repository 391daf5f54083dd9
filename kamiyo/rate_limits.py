"""Rate limiting for every feature: Flask-Limiter's storage and the 429 answer.

Per client IP. The client IP is REMOTE_ADDR; X-Forwarded-For is believed only for
TRUSTED_PROXY_COUNT proxies (ProxyFix, applied in create_app), so a forged header cannot
pick its own bucket. Storage: RATELIMIT_STORAGE_URI, else REDIS_URL, else memory://,
which counts per process (several gunicorn workers each count on their own).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from flask import Flask, current_app
from flask_limiter import RateLimitExceeded
from limits import RateLimitItem
from limits.storage import MemoryStorage
from limits.strategies import RateLimiter

from .extensions import limiter
from .http_errors import ApiError, handle_api_error
from .redis_client import REDIS_TIMEOUTS

log = logging.getLogger("kamiyo.ratelimit")


def init_app(app: Flask) -> None:
    config = app.config
    if not config.get("RATELIMIT_STORAGE_URI"):
        config["RATELIMIT_STORAGE_URI"] = config.get("REDIS_URL") or "memory://"
    # A store that is down or stalled: counted in this process's memory meanwhile (Flask-Limiter
    # retries the store now and then), rather than every request waiting out Redis's timeout,
    # twice (the check, then the count): with all threads waiting, the whole service would stall.
    config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    if config["RATELIMIT_STORAGE_URI"].startswith(("redis://", "rediss://")):
        options = config.setdefault("RATELIMIT_STORAGE_OPTIONS", {})
        for name, seconds in REDIS_TIMEOUTS.items():
            options.setdefault(name, seconds)
    if config["RATELIMIT_STORAGE_URI"].startswith("memory://") and int(os.environ.get("WEB_CONCURRENCY", "1")) > 1:
        log.warning(
            "rate limits are counted per worker (memory:// storage with %s workers), and so is the "
            "circuit breaker: set REDIS_URL (or RATELIMIT_STORAGE_URI) to share them",
            os.environ["WEB_CONCURRENCY"],
        )
    limiter.init_app(app)
    app.extensions[FALLBACK_KEY] = _Fallback()
    app.register_error_handler(RateLimitExceeded, _too_many_requests)


def too_many_requests(reset_at: float | None) -> ApiError:
    """The 429 answer, with Retry-After until the window resets (a minute when unknown)."""
    retry_after = max(1, int(reset_at - time.time()) + 1) if reset_at else 60
    return ApiError(
        429,
        "rate_limited",
        "Too many requests.",
        f"Wait {retry_after} seconds before retrying.",
        headers={"Retry-After": str(retry_after)},
    )


def _too_many_requests(exc: RateLimitExceeded):
    current = limiter.current_limit
    return handle_api_error(too_many_requests(current.reset_at if current else None))


STORE_RETRY_SECONDS = 30.0
FALLBACK_KEY = "kamiyo_rate_limit_fallback"


class _Fallback:
    """This process's memory, used while the store fails."""

    def __init__(self) -> None:
        self.retry_at = 0.0
        self.strategies: dict[type, RateLimiter] = {}
        self.lock = threading.Lock()

    def strategy(self, like: RateLimiter) -> RateLimiter:
        with self.lock:
            return self.strategies.setdefault(type(like), type(like)(MemoryStorage()))


def hit(item: RateLimitItem, *identifiers: str) -> tuple[bool, float]:
    """Count one request now and say whether it is within `item`: (allowed, reset_at), where
    reset_at (epoch seconds) is only looked up for a request over the limit, else 0.

    One atomic increment-and-test in the store, unlike a test now and a count after the
    response, which lets requests in flight together all pass the limit. A store that fails
    is left for this process's memory for STORE_RETRY_SECONDS, as Flask-Limiter's own
    fallback does: waiting out its timeout on every request would stall the service.
    """
    fallback: _Fallback = current_app.extensions[FALLBACK_KEY]
    strategy = limiter.limiter
    if time.monotonic() >= fallback.retry_at:
        try:
            if strategy.hit(item, *identifiers):
                return True, 0.0
            return False, strategy.get_window_stats(item, *identifiers).reset_time
        except Exception as exc:  # noqa: BLE001 -- each store driver (redis, memcached...) has its own errors
            log.warning("rate limit store unreachable (%s): counting in memory", type(exc).__name__)
            fallback.retry_at = time.monotonic() + STORE_RETRY_SECONDS
    memory = fallback.strategy(strategy)
    if memory.hit(item, *identifiers):
        return True, 0.0
    return False, memory.get_window_stats(item, *identifiers).reset_time
