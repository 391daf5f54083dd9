"""The webhook endpoint's rate limit, and what happens when a request is blocked: the row,
the log line, the counters and the alert. The limiter's storage and the 429 answer are set
up in the core, kamiyo/rate_limits.py.

By default (WEBHOOK_RATE_LIMIT_COUNT=failed) only refused requests count, and they count at
refusal: a verified delivery passes whatever its IP did, since Stripe's addresses are shared
with others (and a proxy in front of us may share one with anybody). With `all`, every
request counts before its body is read, and one over the limit is blocked unread.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading

from flask import current_app, request
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..control_chars import replace_control
from ..extensions import db, rowcount
from ..models import utcnow
from ..observability.alerts import send_alert
from ..rate_limits import hit, too_many_requests
from . import metrics
from .models import RateLimitViolation

log = logging.getLogger("kamiyo.ratelimit")

_alerted: set[tuple[str, str]] = set()  # (ip, hour) already alerted by this process
_alerted_lock = threading.Lock()


def sanitise_user_agent(value: str | None) -> str:
    # Printable ASCII only: the client chooses it, and it goes into the log, the table and alerts.
    return replace_control(value or "", "?", beyond_ascii=True)[:256]


# The key Flask-Limiter gave this limit: a count in Redis carries over an upgrade.
SCOPE = "webhooks.stripe_webhook"


@functools.lru_cache(maxsize=8)
def _items(text: str) -> list[RateLimitItem]:
    return parse_many(text)  # validated at start-up (kamiyo/config.py)


def count_refusal() -> None:
    """Count a refused request against its IP; the one past the limit raises the 429 instead.

    Counted at refusal, in one atomic hit: requests with slow bodies are all in flight
    before any is refused, and a check before the body with a count after it let them
    all through."""
    if current_app.config["WEBHOOK_RATE_LIMIT_COUNT"] == "all":
        return  # counted before the body (the blueprint's limit)
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    identifiers = [prefix, get_remote_address(), SCOPE] if prefix else [get_remote_address(), SCOPE]
    for item in _items(webhook_limit()):
        allowed, reset_at = hit(item, *identifiers)
        if not allowed:
            _record(str(item))
            raise too_many_requests(reset_at)


def record_violation(limit: RequestLimit) -> None:
    """on_breach for the blueprint's limit (WEBHOOK_RATE_LIMIT_COUNT=all)."""
    _record(str(limit.limit))


def _record(limit: str) -> None:
    """A blocked request: row, `RATE LIMIT` log line, counters, and an alert past the threshold."""
    metrics.RATE_LIMIT_VIOLATIONS.inc()
    metrics.REQUESTS_BLOCKED.inc()
    now = utcnow()
    fields = {
        "client_ip": (request.remote_addr or "unknown")[:64],
        "user_agent": sanitise_user_agent(request.headers.get("User-Agent")),
        "endpoint": request.path[:255],
        "limit": limit[:64],
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


def counts_only_refusals() -> bool:
    """exempt_when for the blueprint's limit: by default refusals count, in the view."""
    return current_app.config["WEBHOOK_RATE_LIMIT_COUNT"] != "all"


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
