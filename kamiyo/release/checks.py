"""Release checks as values: each one a Check with its status, one line, and what to do.

The functions here decide from what they are given (a configuration mapping, a revision,
a header): preflight.py and verify.py gather the facts, cli.py prints them.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

OK, WARN, FAIL = "ok", "warn", "fail"
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}
LABELS = {OK: "ok  ", WARN: "WARN", FAIL: "FAIL"}
WEBHOOK_PATH = "/api/v1/webhooks/stripe"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    line: str  # what was found
    action: str = ""  # what to do (empty when there is nothing to do)

    def render(self) -> str:
        text = f"[{LABELS[self.status]}] {self.name}: {self.line}"
        return f"{text} -> {self.action}" if self.action else text


def worst(checks: Iterable[Check]) -> str:
    found = {check.status for check in checks}
    return FAIL if FAIL in found else WARN if WARN in found else OK


def exit_code(checks: Sequence[Check]) -> int:
    return EXIT_CODES[worst(checks)]


def summary_line(command: str, checks: Sequence[Check]) -> str:
    counts = {status: sum(1 for c in checks if c.status == status) for status in (OK, WARN, FAIL)}
    return (
        f"{command}: {counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failure(s) (exit {exit_code(checks)})"
    )


def as_json(command: str, checks: Sequence[Check], **extra: Any) -> str:
    return json.dumps(
        {
            "command": command,
            "status": worst(checks),
            "exit_code": exit_code(checks),
            "checks": [asdict(check) for check in checks],
            **extra,
        },
        indent=2,
        sort_keys=True,
        default=str,
    )


# --- secrets -------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]{8,}$")
_PUBLISHABLE_KEY = re.compile(r"^pk_(test|live)_[A-Za-z0-9_]{8,}$")
_WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9_+/=]{8,}$")


def _shape(value: str) -> str:
    """What may be shown of a secret: its kind, never a character of the secret part."""
    found = re.match(r"^(sk|rk|pk)_(test|live)_", value) or re.match(r"^whsec_", value)
    return f"{found.group(0)}..." if found else "a value of another shape"


def check_secrets(config: Mapping[str, Any]) -> list[Check]:
    """Present and well formed, and the keys' modes agree. The values are never shown."""
    checks: list[Check] = []
    secret_key = (config.get("SECRET_KEY") or "").strip()
    if not secret_key:
        checks.append(Check("SECRET_KEY", FAIL, "not set", "set SECRET_KEY to a long random value"))
    elif len(secret_key) < 32:
        checks.append(
            Check(
                "SECRET_KEY",
                WARN,
                f"only {len(secret_key)} characters",
                "use at least 32 random characters: python3 -c 'import secrets; print(secrets.token_hex(32))'",
            )
        )
    else:
        checks.append(Check("SECRET_KEY", OK, "set"))

    modes: dict[str, str] = {}
    stripe_key = (config.get("STRIPE_SECRET_KEY") or "").strip()
    match = _SECRET_KEY.match(stripe_key)
    if not stripe_key:
        checks.append(
            Check(
                "STRIPE_SECRET_KEY", FAIL, "not set", "set it to the account's sk_live_... (or restricted rk_...) key"
            )
        )
    elif not match:
        checks.append(
            Check(
                "STRIPE_SECRET_KEY",
                FAIL,
                f"ill-formed: {_shape(stripe_key)}, expected sk_live_/sk_test_/rk_live_/rk_test_ and the key",
                "copy the secret key again from the Stripe dashboard (Developers > API keys)",
            )
        )
    else:
        modes["STRIPE_SECRET_KEY"] = match.group(2)
        checks.append(Check("STRIPE_SECRET_KEY", OK, f"{_shape(stripe_key)} ({match.group(2)} mode)"))

    publishable = (config.get("STRIPE_PUBLISHABLE_KEY") or "").strip()
    match = _PUBLISHABLE_KEY.match(publishable)
    if not publishable:
        checks.append(
            Check(
                "STRIPE_PUBLISHABLE_KEY",
                WARN,
                "not set",
                "set it to the account's pk_... key (the checkout needs it, and its mode is checked)",
            )
        )
    elif not match:
        checks.append(
            Check(
                "STRIPE_PUBLISHABLE_KEY",
                FAIL,
                f"ill-formed: {_shape(publishable)}, expected pk_live_/pk_test_ and the key",
                "copy the publishable key again from the Stripe dashboard",
            )
        )
    else:
        modes["STRIPE_PUBLISHABLE_KEY"] = match.group(1)
        checks.append(Check("STRIPE_PUBLISHABLE_KEY", OK, f"{_shape(publishable)} ({match.group(1)} mode)"))

    raw = config.get("STRIPE_WEBHOOK_SECRET") or ""
    parts = [part.strip() for part in str(raw).split(",")]
    if not str(raw).strip():
        checks.append(
            Check(
                "STRIPE_WEBHOOK_SECRET",
                FAIL,
                "not set",
                "set it to the endpoint's signing secret (whsec_...; during a rotation: new,old)",
            )
        )
    else:
        bad = [n for n, part in enumerate(parts, 1) if not _WEBHOOK_SECRET.match(part)]
        if bad:
            checks.append(
                Check(
                    "STRIPE_WEBHOOK_SECRET",
                    FAIL,
                    f"{len(parts)} secret(s), ill-formed: number {', '.join(map(str, bad))} "
                    "(expected whsec_ and the secret, comma-separated, no empty item)",
                    "copy the signing secret again from the webhook endpoint's page in the Stripe dashboard",
                )
            )
        elif len(set(parts)) != len(parts):
            checks.append(
                Check(
                    "STRIPE_WEBHOOK_SECRET",
                    WARN,
                    f"{len(parts)} secrets, one of them twice",
                    "list each secret once (new,old during a rotation)",
                )
            )
        else:
            rotation = " (a rotation: remove the old one once Stripe signs with the new)" if len(parts) > 1 else ""
            checks.append(Check("STRIPE_WEBHOOK_SECRET", OK, f"{len(parts)} whsec_ secret(s){rotation}"))

    if len(set(modes.values())) > 1:
        checks.append(
            Check(
                "key modes",
                FAIL,
                f"STRIPE_SECRET_KEY is {modes['STRIPE_SECRET_KEY']} mode, "
                f"STRIPE_PUBLISHABLE_KEY is {modes['STRIPE_PUBLISHABLE_KEY']} mode",
                "use the two keys of one mode (live with live) from the same Stripe account",
            )
        )
    elif modes:
        checks.append(Check("key modes", OK, f"{next(iter(modes.values()))} mode"))
    return checks


def stripe_mode(config: Mapping[str, Any]) -> str | None:
    """live, test, or None when the secret key is missing or ill-formed."""
    match = _SECRET_KEY.match((config.get("STRIPE_SECRET_KEY") or "").strip())
    return match.group(2) if match else None


# --- migrations ----------------------------------------------------------------------


def check_migrations(current: str | None, chain: Sequence[str]) -> Check:
    """`chain`: the code's revisions from base to head; `current`: the database's (None: empty)."""
    head = chain[-1]
    if current == head:
        return Check("migrations", OK, f"database at head {head}")
    if current is None:
        return Check(
            "migrations",
            WARN,
            f"database has no migrations applied (the code's head is {head})",
            "a new database: flask --app wsgi db upgrade creates it",
        )
    if current not in chain:
        return Check(
            "migrations",
            FAIL,
            f"database at {current}, a revision this code does not have (its head is {head})",
            "the database is newer than this release: deploy the release that has it, "
            "or downgrade with that release's code first",
        )
    behind = len(chain) - 1 - chain.index(current)
    if behind == 1:
        return Check(
            "migrations",
            OK,
            f"database at {current}, one step behind head {head}: the release's db upgrade applies it",
        )
    return Check(
        "migrations",
        FAIL,
        f"database at {current}, {behind} steps behind head {head} "
        f"(pending: {', '.join(chain[chain.index(current) + 1 :])})",
        "a release moves one migration at a time (so that one rollback step undoes it): "
        "deploy the releases in between, or run flask --app wsgi db upgrade knowingly",
    )


# --- Redis ---------------------------------------------------------------------------


def check_redis(url: str | None, reachable: bool | None, error: str | None, workers: int, hosts: int) -> Check:
    """`reachable`: None when not configured."""
    if url:
        if reachable:
            return Check("redis", OK, f"reachable at {_without_password(url)}")
        return Check(
            "redis",
            FAIL,
            f"configured ({_without_password(url)}) but not answering: {error}",
            "start Redis (systemctl start redis-server) or fix REDIS_URL / RATELIMIT_STORAGE_URI",
        )
    if hosts > 1:
        return Check(
            "redis",
            FAIL,
            f"not configured, and {hosts} hosts run this service on one database: "
            "each host has its own rate limits and circuit breaker",
            "set REDIS_URL to one Redis every host reaches",
        )
    if workers > 1:
        return Check(
            "redis",
            WARN,
            f"not configured with WEB_CONCURRENCY={workers}: rate limits and the circuit breaker "
            "are counted per worker",
            "set REDIS_URL (or run one worker)",
        )
    return Check("redis", OK, "not configured (one worker on one host: memory is enough)")


def _without_password(url: str) -> str:
    """The URL as redis-py reads it (urllib: the user part ends at the last @ before the host),
    with the user part and the query (`?password=`) left out."""
    parts = urlsplit(url)
    _, at, host = parts.netloc.rpartition("@")
    return f"{parts.scheme}://{'***@' if at else ''}{host}{parts.path}"


# --- Stripe --------------------------------------------------------------------------


def check_stripe(probe: Mapping[str, Any], api_base: str) -> Check:
    if probe.get("ok"):
        return Check("stripe", OK, f"answers at {api_base} ({probe.get('latency_ms')} ms, read-only list call)")
    error = probe.get("error")
    if error == "authentication_failed":
        return Check(
            "stripe", FAIL, "Stripe refuses the secret key", "check STRIPE_SECRET_KEY (revoked, or another account's)"
        )
    if error == "unreachable":
        return Check(
            "stripe",
            FAIL,
            f"no answer from {api_base}",
            "check the network and proxy to Stripe (outbound HTTPS), and STRIPE_API_BASE",
        )
    if error == "http_403":
        return Check(
            "stripe",
            FAIL,
            "Stripe refuses this key the read-only calls (403)",
            "a restricted key (rk_) needs read access to Customers and Webhook Endpoints",
        )
    return Check("stripe", FAIL, f"Stripe answered with an error ({error})", "see https://status.stripe.com")


def check_webhook_endpoint(
    endpoints: list[dict[str, Any]] | None,
    public_url: str | None,
    handled: Sequence[str],
    api_version: str,
    why_unknown: str | None = None,
) -> Check:
    name = "webhook endpoint"
    if endpoints is None:
        return Check(
            name,
            WARN,
            f"could not list the webhook endpoints ({why_unknown or 'this Stripe has no webhook-endpoints API'})",
            "check in the Stripe dashboard that an endpoint points at PUBLIC_URL" + WEBHOOK_PATH,
        )
    if not public_url:
        found = ", ".join(e["url"] for e in endpoints) or "none"
        return Check(
            name,
            WARN,
            f"PUBLIC_URL is not set, so the endpoint cannot be checked (endpoints: {found})",
            "set PUBLIC_URL to the service's public https URL (e.g. https://payments.example.com)",
        )
    expected = public_url.rstrip("/") + WEBHOOK_PATH
    matching = [e for e in endpoints if e.get("url") == expected]
    if not matching:
        elsewhere = ", ".join(e["url"] for e in endpoints)
        return Check(
            name,
            FAIL,
            f"no endpoint points at {expected}" + (f" (endpoints: {elsewhere})" if elsewhere else " (none at all)"),
            f"create one in the Stripe dashboard (Developers > Webhooks) for {expected}, "
            "and put its signing secret in STRIPE_WEBHOOK_SECRET",
        )
    enabled = [e for e in matching if e.get("status") == "enabled"]
    if not enabled:
        return Check(
            name,
            FAIL,
            f"{matching[0]['id']} points at {expected} but is {matching[0].get('status')}",
            "enable it in the Stripe dashboard (Developers > Webhooks)",
        )
    endpoint = enabled[0]
    events = set(endpoint.get("enabled_events") or [])
    missing = [t for t in handled if t not in events] if "*" not in events else []
    version = endpoint.get("api_version") or "the account's default"
    line = f"{endpoint['id']} -> {expected}, enabled, api_version {version}"
    if missing:
        return Check(
            name,
            WARN,
            f"{line}; not enabled for {len(missing)} event type(s) our handlers take: {', '.join(missing)}",
            "add those events to the endpoint in the Stripe dashboard",
        )
    if endpoint.get("api_version") and endpoint["api_version"] != api_version:
        return Check(
            name,
            WARN,
            f"{line}, not the configured {api_version}",
            "webhook endpoints keep their version: create an endpoint on the new version, "
            "move traffic, delete the old one (see deploy/RUNBOOK.md)",
        )
    return Check(name, OK, f"{line}, all {len(handled)} handled event types")


def check_clock(date_header: str | None, now: dt.datetime, tolerance_seconds: float) -> Check:
    """Our clock against Stripe's `Date` header (1 s resolution): beyond the webhook signature
    tolerance, every delivery would be refused as too old or too far ahead."""
    if not date_header:
        return Check("clock", WARN, "Stripe's answer had no Date header", "check NTP: timedatectl status")
    try:
        theirs = email.utils.parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        return Check("clock", WARN, "Stripe's Date header did not parse", "check NTP: timedatectl status")
    if theirs.tzinfo is None:  # `-0000` (RFC 5322's "zone unknown") or none: HTTP dates are GMT
        theirs = theirs.replace(tzinfo=dt.UTC)
    skew = (now - theirs).total_seconds()
    shown = f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} Stripe's"
    if abs(skew) > tolerance_seconds:
        return Check(
            "clock",
            FAIL,
            f"{shown}, beyond the webhook tolerance of {tolerance_seconds:g} s: every webhook would be refused",
            "sync the clock: timedatectl set-ntp true (systemd-timesyncd or chrony)",
        )
    if abs(skew) > max(5.0, tolerance_seconds / 5):
        return Check(
            "clock",
            WARN,
            f"{shown} (webhook tolerance {tolerance_seconds:g} s)",
            "sync the clock: timedatectl set-ntp true",
        )
    return Check("clock", OK, f"within {max(abs(skew), 1):.0f} s of Stripe's (tolerance {tolerance_seconds:g} s)")


def check_version_health(health: Mapping[str, Any], last_check: Mapping[str, Any] | None) -> Check:
    status = health.get("status")
    line = str(health.get("message") or health.get("version"))
    if last_check:
        line += f"; last full check {last_check['status']} at {last_check['checked_at']}"
        if last_check.get("mismatches"):
            line += f" with {last_check['mismatches']} mismatch(es)"
    if status == "critical" or status == "unknown":
        return Check(
            "stripe api version",
            FAIL,
            line,
            "upgrade the pinned version (STRIPE_API_VERSION): flask --app wsgi stripe-version check",
        )
    if status == "warning" or (last_check and last_check.get("status") in ("warning", "critical")):
        return Check("stripe api version", WARN, line, "plan the upgrade: flask --app wsgi stripe-version check")
    return Check("stripe api version", OK, line)
