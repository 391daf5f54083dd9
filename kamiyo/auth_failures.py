"""Failed authentication (an API key or the metrics token): a WARNING line with the client
IP, a per-IP limit, and an alert when one IP goes over it.

Only refusals count, and at refusal: a valid key always passes, whatever its IP (or anyone
sharing it behind a NAT or a proxy) got wrong before. Past AUTH_FAILURE_RATE_LIMIT, a refused
request from that IP answers 429 with Retry-After instead of 401, and the first one of the
hour raises an alert (once per IP and hour across processes, as every alert).
"""

from __future__ import annotations

import functools
import logging
import threading

from flask import Flask, current_app, request
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from prometheus_client import Counter

from .http_errors import ApiError
from .models import utcnow
from .observability.alerts import send_alert
from .observability.request_context import escape_user_agent
from .rate_limits import hit, too_many_requests

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


def refuse(credential: str, reason: str, answer: ApiError) -> ApiError:
    """The error to raise for a refused credential: `answer` (the 401), or a 429 when the
    client's IP is over its limit. Logs the refusal at WARNING either way."""
    ip = get_remote_address() or "-"
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    identifiers = [prefix, ip, SCOPE] if prefix else [ip, SCOPE]
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
    _alert(ip)
    return too_many_requests(blocked_until)


def _alert(ip: str) -> None:
    now = utcnow()
    if not current_app.extensions[ALERTED_KEY].first(ip, now.strftime("%Y-%m-%dT%H")):
        return
    send_alert(
        "repeated_auth_failures",
        f"Client {ip} went over the limit of failed authentications "
        f"({current_app.config['AUTH_FAILURE_RATE_LIMIT']}): someone may be guessing API keys or the metrics "
        "token, or a client runs with a revoked or expired key. Its refused requests now answer 429.",
        severity="warning",
        dedup_key=f"auth-failures:{ip}",
        fields={"client_ip": ip, "limit": current_app.config["AUTH_FAILURE_RATE_LIMIT"]},
        now=now,
    )
