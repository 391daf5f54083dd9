"""What happens when a webhook request is blocked: the row, the log line, the counters
and the alert. The limiter itself (storage, the 429 answer) is set up in the core,
kamiyo/rate_limits.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from flask import current_app, g, request
from flask_limiter import RequestLimit
from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError

from ..control_chars import replace_control
from ..extensions import db, rowcount
from ..models import utcnow
from ..observability.alerts import send_alert
from . import metrics
from .models import RateLimitViolation

log = logging.getLogger("kamiyo.ratelimit")

_alerted: set[tuple[str, str]] = set()  # (ip, hour) already alerted by this process
_alerted_lock = threading.Lock()


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
