"""`flask --app wsgi verify-deploy --url URL`: is the release that just went live healthy?

Asks the running service over HTTP, as its clients and Stripe do, and reads its log."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests

from .checks import FAIL, OK, WARN, WEBHOOK_PATH, Check

TIMEOUT = 10.0
STARTUP_MARK = "[STRIPE VERSION]"
ERROR_LEVELS = ("ERROR", "CRITICAL")
TRACEBACK_MARK = "Traceback (most recent call last)"
RELEASE_SPREAD = dt.timedelta(seconds=120)  # start-up lines this close together are one release
# gunicorn's own lines: [2026-12-06 05:00:00 +0000] [123] [ERROR] ...
_GUNICORN_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\] \[\d+\] \[([A-Z]+)\]")


def _get(session: requests.Session, url: str) -> tuple[int | None, Any, str | None, str | None]:
    """(status, JSON body or None, error, Location). Redirects are not followed: the answer
    of whatever they lead to (another host, the previous release) is not this release's."""
    try:
        response = session.get(url, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        return None, None, type(exc).__name__, None
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body, None, response.headers.get("Location")


def check_health(session: requests.Session, base: str) -> list[Check]:
    found = []
    for name, path in (("health", "/health"), ("payments health", "/api/v1/payments/health")):
        status, body, error, location = _get(session, base + path)
        if status is None:
            found.append(
                Check(
                    name,
                    FAIL,
                    f"no answer from {base}{path} ({error})",
                    "is the service running? systemctl status kamiyo-web; journalctl -u kamiyo-web",
                )
            )
            continue
        if status is not None and 300 <= status < 400:
            found.append(
                Check(
                    name,
                    FAIL,
                    f"{path} answers {status}, a redirect to {(location or 'nowhere')[:200]} (not followed)",
                    "pass --url as the service answers it itself (scheme, host and port, e.g. "
                    "http://127.0.0.1:8000), or fix the proxy's redirect",
                )
            )
            continue
        state = body.get("status") if isinstance(body, dict) else None
        if status == 200 and state == "ok":
            found.append(Check(name, OK, f"{path} answers 200, status ok"))
            continue
        detail = _unhealthy_sections(body) if isinstance(body, dict) else ""
        found.append(
            Check(
                name,
                FAIL,
                f"{path} answers {status}, status {state!r}{detail}",
                "read the answer and the log; roll back if the release caused it (deploy/RUNBOOK.md)",
            )
        )
    return found


def _unhealthy_sections(body: dict[str, Any]) -> str:
    bad = [name for name, section in body.items() if isinstance(section, dict) and section.get("ok") is False]
    return f" (not ok: {', '.join(sorted(bad))})" if bad else ""


def check_idempotency(session: requests.Session, base: str, api_key: str | None, mode: str | None) -> Check:
    """The checklist's "create the customer twice": one customer, the second answer a replay."""
    name = "idempotency probe"
    if mode != "test":
        return Check(
            name,
            WARN if mode is None else OK,
            "skipped: live mode (it would create a real Stripe customer)"
            if mode == "live"
            else "skipped: the Stripe key's mode is unknown",
        )
    if not api_key:
        return Check(
            name,
            WARN,
            "skipped: no API key",
            "pass --api-key or set KAMIYO_API_KEY (a key that may create customers)",
        )
    # Letters only: a run of digits could read as a card number, which the API refuses.
    user = "verify-deploy-" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(16))
    body = {"user_id": user, "email": f"{user}@example.com", "name": "verify-deploy probe"}
    headers = {"Authorization": f"Bearer {api_key}"}
    answers = []
    for _ in range(2):
        try:
            response = session.post(
                base + "/api/v1/payments/customers", json=body, headers=headers, timeout=60, allow_redirects=False
            )
        except requests.RequestException as exc:
            return Check(name, FAIL, f"create failed: {type(exc).__name__}", "read the service's log")
        answers.append(response)
    first, second = answers
    if first.status_code not in (200, 201) or second.status_code != 200:
        code = _error_code(second if first.status_code in (200, 201) else first)
        return Check(
            name,
            FAIL,
            f"answers {first.status_code} then {second.status_code}{f' ({code})' if code else ''}",
            "check the API key (it needs to create customers) and the log",
        )
    a, b = _json_object(first), _json_object(second)
    if a is None or b is None:
        odd = first if a is None else second
        return Check(
            name,
            FAIL,
            f"answers {first.status_code} then {second.status_code}, not JSON "
            f"({odd.headers.get('Content-Type') or 'no Content-Type'}): something else answers at {base}",
            "check --url (a maintenance page, another service or a proxy's page answered)",
        )
    if not a.get("id") or not a.get("stripe_customer_id") or not b.get("id"):
        return Check(
            name,
            FAIL,
            f"answers {first.status_code} then {second.status_code} without a customer (no id and "
            "stripe_customer_id in the answer)",
            "check --url (something else answers there) and the log",
        )
    if a.get("id") != b.get("id") or a.get("stripe_customer_id") != b.get("stripe_customer_id"):
        return Check(
            name,
            FAIL,
            f"two creates gave two customers ({a.get('id')}, {b.get('id')})",
            "stop the release: requests are not deduplicated (deploy/RUNBOOK.md: rollback)",
        )
    return Check(
        name,
        OK,
        f"the same customer twice: {first.status_code} then 200, one customer ({a.get('stripe_customer_id')}), "
        f"Idempotent-Replayed: {second.headers.get('Idempotent-Replayed', 'absent')}",
    )


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_code(response: requests.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def check_rate_limit(session: requests.Session, base: str, limit: int) -> Check:
    """The checklist's 31 unsigned posts: refused (400), and the one past the limit 429."""
    name = "rate-limit probe"
    statuses: list[int] = []
    for _ in range(limit + 1):
        try:
            response = session.post(base + WEBHOOK_PATH, data=b"{}", timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            return Check(name, FAIL, f"post {len(statuses) + 1} failed: {type(exc).__name__}")
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    if statuses[-1] == 429 and len(statuses) == limit + 1:
        return Check(name, OK, f"{limit} unsigned posts refused ({_counted(statuses[:-1])}), post {limit + 1}: 429")
    if statuses[-1] == 429:
        return Check(
            name,
            OK,
            f"429 at post {len(statuses)} (this address had refused requests in the window already)",
        )
    return Check(
        name,
        FAIL,
        f"no 429 after {len(statuses)} unsigned posts ({_counted(statuses)})",
        "with several workers the limit needs Redis (REDIS_URL); check WEBHOOK_RATE_LIMIT and the proxy's "
        "X-Forwarded-For (TRUSTED_PROXY_COUNT)",
    )


def _counted(statuses: Iterable[int]) -> str:
    counts: dict[int, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} x {status}" for status, n in sorted(counts.items()))


# --- the log -------------------------------------------------------------------------


def _line_time(line: str) -> tuple[dt.datetime | None, str | None, str]:
    """(timestamp, level, message) of a JSON log line or a gunicorn line; Nones for others."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None, None, line
        stamp = record.get("timestamp")
        when = None
        if isinstance(stamp, str):
            try:
                when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                when = None
        return when, str(record.get("level") or ""), str(record.get("message") or "")
    match = _GUNICORN_LINE.match(line)
    if match:
        return dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S %z"), match.group(2), line
    return None, None, line


def _release_time(startups: list[dt.datetime | None]) -> dt.datetime | None:
    """The first start-up line of the last release: each worker logs its own, within seconds
    of the others (and again after a HUP), so the release began at the earliest of those."""
    times = [when for when in startups if when is not None]
    if not times:
        return None
    last = began = times[-1]
    for when in reversed(times[:-1]):
        if last - when > RELEASE_SPREAD:
            break
        began = when
    return began


def check_log(path: Path | None, since: dt.datetime | None) -> list[Check]:
    if path is None:
        return [
            Check(
                "log",
                WARN,
                "skipped: no log file known",
                "pass --log PATH or set LOG_FILE to the file the service logs to",
            )
        ]
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return [Check("log", FAIL, f"cannot read {path}: {type(exc).__name__}", "check --log / LOG_FILE")]
    parsed = [_line_time(line) for line in lines]
    startups = [i for i, (_, _, message) in enumerate(parsed) if STARTUP_MARK in message]
    found: list[Check] = []
    if since is None and startups:
        since = _release_time([parsed[i][0] for i in startups])
    if not startups:
        found.append(
            Check(
                "start-up line",
                WARN,
                f"no {STARTUP_MARK} line in {path}",
                "the service logs it at each start at INFO: check LOG_LEVEL and that the service restarted",
            )
        )
    else:
        when, level, message = parsed[startups[-1]]
        status = OK if level in ("INFO", "") else WARN if level == "WARNING" else FAIL
        found.append(
            Check(
                "start-up line",
                status,
                f"{message} ({level or 'no level'}{f', {when.isoformat()}' if when else ''})",
                "" if status == OK else "flask --app wsgi stripe-version check",
            )
        )
    if since is None:
        found.append(Check("log errors", WARN, "skipped: no release time (--since) and no start-up line"))
        return found
    errors = []
    tracebacks = 0
    in_window = False
    for n, (when, level, message) in enumerate(parsed):
        if when is not None:
            in_window = when >= since
        if not in_window:
            continue
        if level in ERROR_LEVELS and STARTUP_MARK not in message:
            errors.append(message[:200])
        elif level is None and message.startswith(TRACEBACK_MARK):
            # Python's own report of an uncaught exception (a thread's, a crash): no time, no
            # level, so it counts where it stands; the exception is its first unindented line.
            errors.append(_exception_line(lines, n)[:200])
            tracebacks += 1
    if errors:
        found.append(
            Check(
                "log errors",
                FAIL,
                f"{len(errors)} ERROR/CRITICAL line(s) since {since.isoformat()}"
                + (f" ({tracebacks} of them Python tracebacks)" if tracebacks else "")
                + f"; last: {errors[-1]}",
                f'read them: grep -E \'"level": "(ERROR|CRITICAL)"|^Traceback\' {path}',
            )
        )
    else:
        found.append(Check("log errors", OK, f"no ERROR or CRITICAL line (nor traceback) since {since.isoformat()}"))
    return found


def _exception_line(lines: list[str], start: int) -> str:
    for line in lines[start + 1 :]:
        if line and not line[0].isspace():
            return line
    return lines[start]


def run_verify(
    base: str,
    api_key: str | None,
    mode: str | None,
    log_path: Path | None,
    since: dt.datetime | None,
    probe_rate_limit: bool,
    rate_limit: int,
) -> list[Check]:
    base = base.rstrip("/")
    with requests.Session() as session:
        checks = check_health(session, base)
        if any(check.status == FAIL and "no answer" in check.line for check in checks):
            # Nothing answers: the probes would only repeat it.
            return checks + check_log(log_path, since)
        checks.append(check_idempotency(session, base, api_key, mode))
        if probe_rate_limit:
            checks.append(check_rate_limit(session, base, rate_limit))
        else:
            checks.append(Check("rate-limit probe", OK, "skipped (it adds violations): --probe-rate-limit runs it"))
    return checks + check_log(log_path, since)
