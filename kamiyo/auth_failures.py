"""Failed authentication (an API key or the metrics token): a WARNING line with the client
IP, a per-IP limit, and an alert when one IP goes over it.

Only refusals count, and at refusal: a valid key always passes, whatever its IP (or anyone
sharing it behind a NAT or a proxy) got wrong before. Past AUTH_FAILURE_RATE_LIMIT, a refused
request from that IP answers 429 with Retry-After instead of 401, and the first one of the
hour raises an alert (once per IP and hour across processes, as every alert).

"Per IP" is per IPv4 address and per IPv6 /64: one IPv6 client holds a whole /64 (2^64
addresses), and would otherwise start a fresh count, and raise a fresh alert, with each.
The log line keeps the full address.

The metrics token is one shared secret, typed by an operator, not 256 random bits: an IP
over the limit is answered 429 for it even when it is right (`check_blocked`), or a guesser
would still tell a right guess from a wrong one. API keys never are: a valid key is never
slowed by someone else's failures.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time

from flask import Flask, current_app, request
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from prometheus_client import Counter

from .extensions import limiter
from .http_errors import ApiError
from .models import utcnow
from .observability.alerts import send_alert
from .observability.request_context import escape_user_agent
from .rate_limits import FALLBACK_KEY, hit, too_many_requests

log = logging.getLogger("kamiyo.auth")

SCOPE = "auth-failures"  # the limiter's key for this count, beside the IP

AUTH_FAILURES = Counter(
    "auth_failures_total",
    "Refused API keys and metrics tokens, by answer (401, or 429 past the per-IP limit)",
    ["credential", "answer"],
)

ALERTED_KEY = "kamiyo_auth_failures_alerted"


class _Alerted:
    """The IPs this app has alerted on in the current hour: no database round trip for each
    blocked request. Forgotten when the hour turns, so it stays as small as one hour's IPs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hour = ""
        self.ips: set[str] = set()

    def first(self, ip: str, hour: str) -> bool:
        with self.lock:
            if hour != self.hour:
                self.hour, self.ips = hour, set()
            if ip in self.ips:
                return False
            self.ips.add(ip)
            return True


@functools.lru_cache(maxsize=8)
def _items(text: str) -> list[RateLimitItem]:
    return parse_many(text)


def init_app(app: Flask) -> None:
    app.extensions[ALERTED_KEY] = _Alerted()
    for credential in ("api_key", "metrics_token"):
        for answer in ("401", "429"):
            AUTH_FAILURES.labels(credential, answer)


def client_bucket(ip: str) -> str:
    """What the limit and the alert count per: the IPv4 address, or the IPv6 /64 (an
    IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _identifiers(bucket: str) -> list[str]:
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    return [prefix, bucket, SCOPE] if prefix else [bucket, SCOPE]


def peek(item: RateLimitItem, *identifiers: str) -> tuple[bool, float]:
    """Whether one more hit would be within `item`, counting nothing: (allowed, reset_at), as
    rate_limits.hit. A store that fails answers allowed (hit() counts in memory meanwhile)."""
    fallback = current_app.extensions[FALLBACK_KEY]
    try:
        strategy = limiter.limiter if time.monotonic() >= fallback.retry_at else fallback.strategy(limiter.limiter)
        if strategy.test(item, *identifiers):
            return True, 0.0
        return False, strategy.get_window_stats(item, *identifiers).reset_time
    except Exception as exc:  # noqa: BLE001 -- each store driver (redis, memcached...) has its own errors
        log.warning("rate limit store unreachable (%s): not checked", type(exc).__name__)
        return True, 0.0


def check_blocked(credential: str) -> None:
    """For a shared secret (the metrics token): raise the 429 before the secret is checked when
    the client's IP is over its limit already. Counts nothing."""
    ip = get_remote_address() or "-"
    identifiers = _identifiers(client_bucket(ip))
    for item in _items(current_app.config["AUTH_FAILURE_RATE_LIMIT"]):
        allowed, reset_at = peek(item, *identifiers)
        if not allowed:
            log.warning(
                "authentication refused: %s from %s, over the failure limit",
                credential,
                ip,
                extra={"client_ip": ip, "credential": credential, "reason": "over the limit", "rate_limited": True},
            )
            AUTH_FAILURES.labels(credential, "429").inc()
            raise too_many_requests(reset_at)


def refuse(credential: str, reason: str, answer: ApiError) -> ApiError:
    """The error to raise for a refused credential: `answer` (the 401), or a 429 when the
    client's IP is over its limit. Logs the refusal at WARNING either way."""
    ip = get_remote_address() or "-"
    bucket = client_bucket(ip)
    identifiers = _identifiers(bucket)
    blocked_until = None
    for item in _items(current_app.config["AUTH_FAILURE_RATE_LIMIT"]):
        allowed, reset_at = hit(item, *identifiers)
        if not allowed:
            blocked_until = reset_at
            break
    # Never the credential itself, nor any part of it: a "wrong" key may be a real one mistyped.
    log.warning(
        "authentication failed: %s (%s) from %s",
        credential,
        reason,
        ip,
        extra={
            "client_ip": ip,
            "client_bucket": bucket,
            "credential": credential,
            "reason": reason,
            "path": request.path,
            "user_agent": escape_user_agent(request.headers.get("User-Agent")),
            "rate_limited": blocked_until is not None,
        },
    )
    if blocked_until is None:
        AUTH_FAILURES.labels(credential, "401").inc()
        return answer
    AUTH_FAILURES.labels(credential, "429").inc()
    _alert(ip, bucket)
    return too_many_requests(blocked_until)


def _alert(ip: str, bucket: str) -> None:
    now = utcnow()
    if not current_app.extensions[ALERTED_KEY].first(bucket, now.strftime("%Y-%m-%dT%H")):
        return
    where = ip if bucket == ip else f"{ip} (network {bucket})"
    send_alert(
        "repeated_auth_failures",
        f"Client {where} went over the limit of failed authentications "
        f"({current_app.config['AUTH_FAILURE_RATE_LIMIT']}): someone may be guessing API keys or the metrics "
        "token, or a client runs with a revoked or expired key. Its refused requests now answer 429.",
        severity="warning",
        dedup_key=f"auth-failures:{bucket}",
        fields={"client_ip": ip, "client_network": bucket, "limit": current_app.config["AUTH_FAILURE_RATE_LIMIT"]},
        now=now,
    )
