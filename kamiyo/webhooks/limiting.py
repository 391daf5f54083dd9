"""The webhook endpoint's rate limit, and what happens when a request is blocked: the log
line, the metrics, the counter row and the alert. The limiter's storage and the 429 answer are set
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
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from ..control_chars import replace_control
from ..extensions import db, rowcount
from ..models import utcnow
from ..observability.alerts import send_alert
from ..observability.logging import redact
from ..rate_limits import hit, too_many_requests
from . import metrics
from .models import RateLimitViolation

log = logging.getLogger("kamiyo.ratelimit")

_alerted: set[tuple[str, str]] = set()  # (ip, hour) already alerted by this process
_alerted_lock = threading.Lock()


def sanitise_user_agent(value: str | None) -> str:
    # Printable ASCII only: the client chooses it, and it goes into the log, the table and alerts.
    # Redacted like a log line: the table and the dashboard must not hold a key a client put in
    # it either. Redacted before it is cut, so that no cut leaves part of a key unrecognised.
    return redact(replace_control(value or "", "?", beyond_ascii=True))[:256]


# The key Flask-Limiter gave this limit: a count in Redis carries over an upgrade.
SCOPE = "webhooks.stripe_webhook"


@functools.lru_cache(maxsize=8)
def _items(text: str) -> list[RateLimitItem]:
    return parse_many(text)  # validated at start-up (kamiyo/config.py)


def warn_if_counted_per_worker(app: Flask) -> None:
    """With several workers and memory:// storage, each worker keeps its own count: say at
    start-up what that does to the limit, which the README promises per IP."""
    workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    if workers <= 1 or not app.config["RATELIMIT_STORAGE_URI"].startswith("memory://"):
        return
    amount = min(item.amount for item in _items(app.config["WEBHOOK_RATE_LIMIT"]))
    log.warning(
        "webhook rate limit counted per worker: with %d workers the first 429 comes between the %s and the %s "
        "refused webhook from one IP (WEBHOOK_RATE_LIMIT %s); set REDIS_URL to count once",
        workers,
        _ordinal(amount + 1),
        _ordinal(workers * amount + 1),
        app.config["WEBHOOK_RATE_LIMIT"],
    )


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def count_refusal() -> None:
    """Count a refused request against its IP; the one past the limit raises the 429 instead.

    Counted at refusal, in one atomic hit: requests with slow bodies are all in flight
    before any is refused, and a check before the body with a count after it let them
    all through."""
    if current_app.config["WEBHOOK_RATE_LIMIT_COUNT"] == "all":
        return  # counted before the body (the blueprint's limit)
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    identifiers = [prefix, get_remote_address(), SCOPE] if prefix else [get_remote_address(), SCOPE]
    blocked: _BlockedUntil = current_app.extensions[BLOCKED_KEY]
    for item in _items(webhook_limit()):
        key = item.key_for(*identifiers)
        reset_at = blocked.get(key)
        if reset_at is None:
            allowed, reset_at = hit(item, *identifiers)
            if allowed:
                continue
            blocked.set(key, reset_at)
        _record(str(item))
        raise too_many_requests(reset_at)


BLOCKED_KEY = "kamiyo_blocked_until"


class _BlockedUntil:
    """Keys this process saw over their limit, until the window resets: blocking them again
    needs no hit in the store (a Redis round trip), so a block costs less than a refusal."""

    LIMIT = 10_000  # keys kept; a distributed flood beyond that is counted in the store again

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.until: dict[str, float] = {}

    def get(self, key: str) -> float | None:
        reset_at = self.until.get(key)
        return reset_at if reset_at is not None and reset_at > time.time() else None

    def set(self, key: str, reset_at: float) -> None:
        with self.lock:
            if len(self.until) >= self.LIMIT:
                now = time.time()
                self.until = {k: v for k, v in self.until.items() if v > now}
            if len(self.until) < self.LIMIT:
                self.until[key] = reset_at


def record_violation(limit: RequestLimit) -> None:
    """on_breach for the blueprint's limit (WEBHOOK_RATE_LIMIT_COUNT=all)."""
    _record(str(limit.limit))


FLUSH_SECONDS = 1.0  # blocks are written together at most this often, per process
AGENTS_PER_MINUTE = 5  # user agents of one IP and minute with a row of their own, per process
OTHER_AGENTS = "(other user agents)"
PENDING_KEY = "kamiyo_blocked_pending"


class _Pending:
    """Blocks counted in this process and not written yet, per (minute, ip, endpoint, agent):
    [count, latest time, limit]."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.counts: dict[tuple[dt.datetime, str, str, str], list] = {}
        self.agents: dict[tuple[dt.datetime, str], set[str]] = {}
        self.written_at = 0.0
        self.timer: threading.Timer | None = None

    def add(self, fields: dict[str, str], now: dt.datetime) -> bool:
        """Count one block; True when it is time to write."""
        minute = now.replace(second=0, microsecond=0)
        ip, agent = fields["client_ip"], fields["user_agent"]
        with self.lock:
            seen = self.agents.setdefault((minute, ip), set())
            if agent not in seen:
                if len(seen) < AGENTS_PER_MINUTE:
                    seen.add(agent)
                else:
                    agent = OTHER_AGENTS
            entry = self.counts.setdefault((minute, ip, fields["endpoint"], agent), [0, now, fields["limit"]])
            entry[0] += 1
            entry[1], entry[2] = now, fields["limit"]
            wait = self.written_at + FLUSH_SECONDS - time.monotonic()
            if wait > 0 and self.timer is None:
                # What comes after the last block of a burst is written without waiting for another.
                self.timer = threading.Timer(wait, self._on_timer)
                self.timer.daemon = True
                self.timer.start()
            return wait <= 0

    def take(self) -> dict[tuple[dt.datetime, str, str, str], list]:
        with self.lock:
            taken, self.counts = self.counts, {}
            self.written_at = time.monotonic()
            if taken:  # earlier minutes' agents are done with
                latest = max(key[0] for key in taken)
                self.agents = {key: agents for key, agents in self.agents.items() if key[0] >= latest}
            return taken

    def _on_timer(self) -> None:
        with self.lock:
            self.timer = None
        with self.app.app_context():
            flush()


def _record(limit: str) -> None:
    """A blocked request: `RATE LIMIT` log line, metrics, and its count (written with the
    others at most every FLUSH_SECONDS), then an alert past the threshold."""
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
    if current_app.extensions[PENDING_KEY].add(fields, now):
        flush()


def init_pending(app: Flask) -> None:
    app.extensions[PENDING_KEY] = _Pending(app)
    app.extensions[BLOCKED_KEY] = _BlockedUntil()


def flush() -> None:
    """Write this process's pending blocks: one upsert for all, then the alert check of
    each IP written, per hour."""
    taken = current_app.extensions[PENDING_KEY].take()
    if not taken:
        return
    rows = [
        {
            "occurred_at": minute,
            "client_ip": ip,
            "endpoint": endpoint,
            "user_agent": agent,
            "limit": limit,
            "count": n,
            "last_at": last,
        }
        for (minute, ip, endpoint, agent), (n, last, limit) in taken.items()
    ]
    table = RateLimitViolation.__table__
    upsert = (postgresql if db.engine.dialect.name == "postgresql" else sqlite).insert(table)
    new = upsert.excluded
    upsert = upsert.on_conflict_do_update(
        index_elements=[table.c.occurred_at, table.c.client_ip, table.c.endpoint, table.c.user_agent],
        set_={
            "count": table.c.count + new["count"],
            "limit": new["limit"],
            "last_at": case((table.c.last_at > new.last_at, table.c.last_at), else_=new.last_at),
        },
    )
    try:
        db.session.execute(upsert, rows)
        db.session.commit()
    except SQLAlchemyError as exc:
        # The 429s went out; the log lines are the record.
        db.session.rollback()
        log.error("%d rate limit violations not stored: %s", sum(r["count"] for r in rows), type(exc).__name__)
        return
    latest: dict[tuple[str, str], dict] = {}  # (ip, hour) -> its latest row
    for row in rows:
        key = (row["client_ip"], row["last_at"].strftime("%Y-%m-%dT%H"))
        if key not in latest or row["last_at"] > latest[key]["last_at"]:
            latest[key] = row
    for row in latest.values():
        try:
            _maybe_alert(row, row["last_at"])
        except SQLAlchemyError as exc:
            db.session.rollback()
            log.error("rate limit alert not checked: %s", type(exc).__name__)


def _maybe_alert(fields: Mapping[str, Any], now: dt.datetime) -> None:
    ip, hour = fields["client_ip"], now.strftime("%Y-%m-%dT%H")
    if (ip, hour) in _alerted:
        return
    threshold = int(current_app.config["RATE_LIMIT_ALERT_PER_HOUR"])
    since = now.replace(minute=0, second=0, microsecond=0)
    count = int(
        db.session.scalar(
            select(func.coalesce(func.sum(RateLimitViolation.count), 0)).where(
                RateLimitViolation.client_ip == ip,
                RateLimitViolation.occurred_at >= since,
                RateLimitViolation.occurred_at < since + dt.timedelta(hours=1),
            )
        )
        or 0
    )
    db.session.rollback()
    if count <= threshold:
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
    """Counters of blocked requests are kept as long as the events (WEBHOOK_RETENTION_DAYS),
    then deleted; returns how many rows."""
    cutoff = (now or utcnow()) - dt.timedelta(days=int(current_app.config["WEBHOOK_RETENTION_DAYS"]))
    deleted = rowcount(db.session.execute(delete(RateLimitViolation).where(RateLimitViolation.occurred_at < cutoff)))
    db.session.commit()
    log.info("purged %d rate-limit violations from before %s", deleted, cutoff.isoformat())
    return deleted
