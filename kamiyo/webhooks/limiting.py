"""Rate limiting: Flask-Limiter's storage, the trusted-proxy setting, the 429
answer, and what happens when a webhook request is blocked.

Per client IP. The client IP is REMOTE_ADDR; X-Forwarded-For is believed only
for TRUSTED_PROXY_COUNT proxies (ProxyFix, applied in create_app), so a forged header cannot pick its
own bucket. Storage: RATELIMIT_STORAGE_URI, else REDIS_URL, else memory://,
which counts per process (several gunicorn workers each count on their own).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time

from flask import Flask, current_app, g, request
from flask_limiter import RateLimitExceeded, RequestLimit
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..control_chars import replace_control
from ..extensions import db, limiter, rowcount
from ..http_errors import ApiError, handle_api_error
from ..models import utcnow
from ..observability.alerts import send_alert
from ..redis_client import REDIS_TIMEOUTS
from . import metrics
from .models import RateLimitViolation

log = logging.getLogger("kamiyo.ratelimit")

_alerted: set[tuple[str, str]] = set()  # (ip, hour) already alerted by this process
_alerted_lock = threading.Lock()


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


def sanitise_user_agent(value: str | None) -> str:
    # Printable ASCII only: the client chooses it, and it goes into the log, the table and alerts.
    return replace_control(value or "", "?", beyond_ascii=True)[:256]


def record_violation(limit: RequestLimit) -> None:
    """A blocked request: row, `RATE LIMIT` log line, counters, and an alert past the threshold."""
    metrics.RATE_LIMIT_VIOLATIONS.inc()
    metrics.REQUESTS_BLOCKED.inc()
    now = utcnow()
    fields = {
        "client_ip": (request.remote_addr or "unknown")[:64],
        "user_agent": sanitise_user_agent(request.headers.get("User-Agent")),
        "endpoint": request.path[:255],
        "limit": str(limit.limit)[:64],
        "violation_time": now.isoformat().replace("+00:00", "Z"),
    }
    log.warning(
        "RATE LIMIT exceeded: %s %s (%s)", fields["client_ip"], fields["endpoint"], fields["limit"], extra=fields
    )
    try:
        db.session.add(
            RateLimitViolation(
                client_ip=fields["client_ip"],
                user_agent=fields["user_agent"],
                endpoint=fields["endpoint"],
                limit=fields["limit"],
                occurred_at=now,
            )
        )
        db.session.commit()
        _maybe_alert(fields, now)
    except SQLAlchemyError as exc:
        # The 429 still goes out; the log line above is the record.
        db.session.rollback()
        log.error("rate limit violation not stored: %s", type(exc).__name__)


def _maybe_alert(fields: dict[str, str], now) -> None:
    ip, hour = fields["client_ip"], now.strftime("%Y-%m-%dT%H")
    if (ip, hour) in _alerted:
        return
    threshold = int(current_app.config["RATE_LIMIT_ALERT_PER_HOUR"])
    since = now.replace(minute=0, second=0, microsecond=0)
    count = db.session.scalar(
        select(func.count(RateLimitViolation.id)).where(
            RateLimitViolation.client_ip == ip, RateLimitViolation.occurred_at >= since
        )
    )
    db.session.rollback()
    if (count or 0) <= threshold:
        return
    send_alert(
        "Webhook rate limit",
        f"{ip} was blocked {count} times this hour on {fields['endpoint']}",
        severity="critical",
        dedup_key=f"webhook-rate-limit:{ip}",
        now=now,
        fields={
            "client_ip": ip,
            "violations": count,
            "endpoint": fields["endpoint"],
            "user_agent": fields["user_agent"],
        },
    )
    with _alerted_lock:  # bounded: only this hour's IPs are kept
        _alerted.difference_update({key for key in _alerted if key[1] != hour})
        if len(_alerted) < 10_000:
            _alerted.add((ip, hour))


def counts_against_limit(response) -> bool:
    """deduct_when for the webhook limit: by default only refused requests count."""
    if response.status_code == 429:
        return False
    return current_app.config["WEBHOOK_RATE_LIMIT_COUNT"] == "all" or bool(g.get("webhook_refused"))


def webhook_limit() -> str:
    return current_app.config["WEBHOOK_RATE_LIMIT"]


def purge_old_violations(now: dt.datetime | None = None) -> int:
    """Blocked requests are recorded one row each, as many as an attacker sends: kept as long
    as the events (WEBHOOK_RETENTION_DAYS), then deleted; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(days=int(current_app.config["WEBHOOK_RETENTION_DAYS"]))
    deleted = rowcount(db.session.execute(delete(RateLimitViolation).where(RateLimitViolation.occurred_at < cutoff)))
    db.session.commit()
    log.info("purged %d rate-limit violations from before %s", deleted, cutoff.isoformat())
    return deleted
