"""Rate limiting for every feature: Flask-Limiter's storage and the 429 answer.

Per client IP. The client IP is REMOTE_ADDR; X-Forwarded-For is believed only for
TRUSTED_PROXY_COUNT proxies (ProxyFix, applied in create_app), so a forged header cannot
pick its own bucket. Storage: RATELIMIT_STORAGE_URI, else REDIS_URL, else memory://,
which counts per process (several gunicorn workers each count on their own).
"""

from __future__ import annotations

import logging
import os
import time

from flask import Flask
from flask_limiter import RateLimitExceeded

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
    app.register_error_handler(RateLimitExceeded, _too_many_requests)


def _too_many_requests(exc: RateLimitExceeded):
    current = limiter.current_limit
    retry_after = max(1, int(current.reset_at - time.time()) + 1) if current else 60
    return handle_api_error(
        ApiError(
            429,
            "rate_limited",
            "Too many requests.",
            f"Wait {retry_after} seconds before retrying.",
            headers={"Retry-After": str(retry_after)},
        )
    )
