"""Configuration: defaults → instance/config.py → environment → test mapping.

Read by create_app(), never at import time, so tests and CLI commands each get
the configuration they were started with.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .stripe_gateway.library import LIBRARY_API_VERSION

# Every setting the service knows, with its default. The README lists these;
# an environment variable of the same name (or KAMIYO_<name>) overrides it.
DEFAULTS: dict[str, Any] = {
    "SECRET_KEY": None,
    "DATABASE_URL": None,  # None → SQLite file in the instance folder
    "REDIS_URL": None,
    "STRIPE_SECRET_KEY": None,
    "STRIPE_PUBLISHABLE_KEY": None,
    "STRIPE_WEBHOOK_SECRET": None,  # comma-separated list during rotation
    "STRIPE_API_VERSION": LIBRARY_API_VERSION,  # the version stripe-python pins
    "STRIPE_API_BASE": "https://api.stripe.com",
    "STRIPE_TIMEOUT_SECONDS": 30.0,
    "STRIPE_HEALTH_TIMEOUT_SECONDS": 2.0,
    "STRIPE_HEALTH_CACHE_SECONDS": 10.0,
    # --- payments: retries, circuit breaker, idempotency
    "STRIPE_RETRY_ATTEMPTS": 3,
    "STRIPE_RETRY_MIN_WAIT": 1.0,
    "STRIPE_RETRY_MAX_WAIT": 10.0,
    "BREAKER_FAIL_MAX": 5,
    "BREAKER_RESET_TIMEOUT": 60.0,
    "IDEMPOTENCY_WAIT_SECONDS": 5.0,  # how long a concurrent twin waits for the first request's result
    "OPERATION_LEASE_SECONDS": 120.0,  # a claimed operation is retaken after this (crashed worker)
    "IDEMPOTENCY_KEY_TTL_HOURS": 24,  # client Idempotency-Key records
    "STRIPE_CALLS_RETENTION_DAYS": 30,  # the record of every Stripe attempt
    # price id → tier ("price_a=pro,price_b=team", or a mapping in instance/config.py); None:
    # each price is looked up on Stripe (cached) and the tier is not checked against it.
    "PRICE_TIERS": None,
    "PRICE_CACHE_SECONDS": 3600.0,  # how long a price found on Stripe is known (a missing one: 60 s)
    "SCHEDULER_ENABLED": False,
    "SCHEDULER_TIMEZONE": "UTC",
    # How often a web process looks whether the purges ran in the last day (and runs them if not); 0: never.
    "SCHEDULER_FALLBACK_MINUTES": 10.0,
    "SUPPORT_CONTACT": "support@kamiyo.ai",
    "LOG_LEVEL": "INFO",
    "METRICS_TOKEN": None,  # when set, GET /metrics needs 'Authorization: Bearer <token>'
    "ALERT_WEBHOOK_URL": None,  # Slack-compatible incoming webhook
    "ALERT_TIMEOUT_SECONDS": 5.0,
    "MAX_CONTENT_LENGTH": 1024 * 1024,  # 1 MiB: larger bodies answer 413
    "SQLITE_BUSY_TIMEOUT_MS": 5000,
    # The webhook intake's throughput pieces, each switchable so `make bench` can weigh it.
    "WEBHOOK_GROUP_COMMIT": True,
    "WEBHOOK_WRITE_GATE": True,
    "PREPARED_STATEMENTS": True,
    # PostgreSQL: a statement waiting this long for a lock fails (and its batch is redone
    # event by event) instead of holding up every webhook behind it; 0 waits for ever.
    "POSTGRES_LOCK_TIMEOUT_MS": 5000,
    "DEMO_MODE": False,
    "DEMO_STRIPE_PORT": 8420,
    # Stripe API version monitor (kamiyo/versioning): age thresholds in days.
    "VERSION_WARNING_DAYS": 180,
    "VERSION_CRITICAL_DAYS": 365,
    # --- Stripe webhooks (kamiyo/webhooks) ---
    "WEBHOOK_RATE_LIMIT": "30/minute",  # per client IP (Flask-Limiter syntax)
    "WEBHOOK_RATE_LIMIT_COUNT": "failed",  # failed: only unverified requests count; all: every request
    "WEBHOOK_TOLERANCE_SECONDS": 300,  # signature timestamp may be this old (or this far ahead)
    "WEBHOOK_RETENTION_DAYS": 30,  # stored events older than this are purged
    "RATE_LIMIT_ALERT_PER_HOUR": 100,  # blocked requests from one IP in an hour before alerting
    "RATELIMIT_STORAGE_URI": None,  # None → REDIS_URL when set, else memory:// (one process only)
    "TRUSTED_PROXY_COUNT": 0,  # proxies in front of us whose X-Forwarded-For is trusted
    # --- the ops dashboard (kamiyo/dashboard) ---
    "DASHBOARD_SESSION_HOURS": 8.0,  # a session ends this long after its login, however busy
    "DASHBOARD_COOKIE_SECURE": "auto",  # auto: Secure except in demo mode and debug; true; false
    "LOGIN_RATE_LIMIT_PER_IP": "20/minute",
    "LOGIN_RATE_LIMIT_PER_ACCOUNT": "5/minute;20/hour",  # per account and client (IPv4, IPv6 /64)
    "LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS": "100/hour",  # past it, only clients with no failures try
    "BACKUP_KEEP": 14,  # `flask db backup` keeps this many backups in its folder
    # --- release checks (kamiyo/release) ---
    "PUBLIC_URL": None,  # https://payments.example.com: where Stripe reaches us (webhook endpoint)
    "LOG_FILE": None,  # the file the service's log lands in (read by verify-deploy)
    # --- failed authentication (kamiyo/auth_failures.py) ---
    "AUTH_FAILURE_RATE_LIMIT": "20/minute",  # refused API keys / metrics tokens per client IP
    # --- deploys ---
    # What is running (a commit, a tag): /health and the start-up line report it, so a release
    # or a reload can be seen to have taken.
    "RELEASE_ID": None,
}

# Without these the service cannot run safely outside demo mode and tests.
REQUIRED_SECRETS = ("SECRET_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET")

DEMO_SECRETS_FILE = "demo-secrets.json"


class ConfigError(Exception):
    """A configuration problem, reported as one line without a traceback."""


def _coerce(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        value = raw.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"expected true/false, got {raw!r}")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Known settings from the environment: `NAME` or `KAMIYO_NAME` (the latter wins)."""
    found: dict[str, Any] = {}
    for name, default in DEFAULTS.items():
        for var in (name, f"KAMIYO_{name}"):
            if var in environ:
                try:
                    found[name] = _coerce(environ[var], default)
                except (ValueError, ConfigError) as exc:
                    raise ConfigError(f"{var} has an invalid value: {exc}") from None
    return found


def load_demo_secrets(instance_path: str) -> dict[str, str]:
    """Random secrets for demo mode, made once and kept in the instance folder."""
    path = Path(instance_path) / DEMO_SECRETS_FILE
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "SECRET_KEY": secrets.token_hex(32),
        # localstripe accepts any sk_test_ key; this one only ever reaches it.
        "STRIPE_SECRET_KEY": "sk_test_demo" + secrets.token_hex(12),
        "STRIPE_PUBLISHABLE_KEY": "pk_test_demo" + secrets.token_hex(12),
        "STRIPE_WEBHOOK_SECRET": "whsec_demo" + secrets.token_hex(16),
    }
    Path(instance_path).mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


DEMO_ENDPOINTS_FILE = "demo-endpoints.json"


def write_demo_endpoints(instance_path: str, stripe_api_base: str, public_url: str) -> None:
    """Where the running demo's Stripe (the emulator proxy) and service answer."""
    path = Path(instance_path) / DEMO_ENDPOINTS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"STRIPE_API_BASE": stripe_api_base, "PUBLIC_URL": public_url}, fh)


def _read_demo_endpoints(instance_path: str) -> dict[str, str]:
    try:
        values = json.loads((Path(instance_path) / DEMO_ENDPOINTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in values.items() if k in ("STRIPE_API_BASE", "PUBLIC_URL") and isinstance(v, str)}


def finalise(config: dict[str, Any], instance_path: str) -> None:
    """Derive dependent settings and validate; raises ConfigError with one line."""
    if config.get("DEMO_MODE"):
        for name, value in load_demo_secrets(instance_path).items():
            if not config.get(name):
                config[name] = value
        endpoints = _read_demo_endpoints(instance_path)
        if config.get("STRIPE_API_BASE") == DEFAULTS["STRIPE_API_BASE"]:
            config["STRIPE_API_BASE"] = endpoints.get(
                "STRIPE_API_BASE", f"http://127.0.0.1:{config['DEMO_STRIPE_PORT']}"
            )
        if not config.get("PUBLIC_URL") and endpoints.get("PUBLIC_URL"):
            config["PUBLIC_URL"] = endpoints["PUBLIC_URL"]

    if not config.get("TESTING") and not config.get("DEMO_MODE"):
        for name in REQUIRED_SECRETS:
            if not config.get(name):
                # Both ways out: a first try from a fresh clone most often wants the demo.
                raise ConfigError(
                    f"{name} is not set. Either set {', '.join(REQUIRED_SECRETS[:-1])} and "
                    f"{REQUIRED_SECRETS[-1]} (environment or instance/config.py), or use demo mode: `make run` "
                    "without STRIPE_SECRET_KEY, and KAMIYO_DEMO_MODE=1 in front of a command meant for that demo"
                )

    url = config.get("SQLALCHEMY_DATABASE_URI") or config.get("DATABASE_URL")
    if not url:
        url = "sqlite:///" + str(Path(instance_path) / "kamiyo.db")
    if url.startswith("postgres://"):  # Heroku-style alias SQLAlchemy no longer accepts
        url = "postgresql://" + url[len("postgres://") :]
    config["SQLALCHEMY_DATABASE_URI"] = url

    secrets_raw = config.get("STRIPE_WEBHOOK_SECRET") or ""
    config["STRIPE_WEBHOOK_SECRETS"] = [s.strip() for s in secrets_raw.split(",") if s.strip()]

    # Checked here, where gunicorn's master sees them before forking workers that would die.
    for name in RATE_LIMIT_SETTINGS:
        _check_rate_limit(name, config[name])
    if config["WEBHOOK_RATE_LIMIT_COUNT"] not in ("failed", "all"):
        raise ConfigError("WEBHOOK_RATE_LIMIT_COUNT must be 'failed' or 'all'")
    if int(config["POSTGRES_LOCK_TIMEOUT_MS"]) < 0:
        raise ConfigError("POSTGRES_LOCK_TIMEOUT_MS must be 0 (no limit) or more")
    _check_lease(config)
    _check_webhook_tolerance(config["WEBHOOK_TOLERANCE_SECONDS"])
    _check_api_base(config["STRIPE_API_BASE"])
    if not config.get("TESTING") and not config.get("DEMO_MODE"):
        _check_metrics_token(config.get("METRICS_TOKEN"))
    from .config_checks import check_service_settings  # a module of its own: see there

    check_service_settings(config, os.environ)


def stripe_step_seconds(config: Mapping[str, Any]) -> float:
    """The longest one Stripe call can take through its retries: attempts x timeout + backoff."""
    attempts = int(config["STRIPE_RETRY_ATTEMPTS"])
    waits = sum(
        min(float(config["STRIPE_RETRY_MAX_WAIT"]), float(config["STRIPE_RETRY_MIN_WAIT"]) * 2**n)
        for n in range(attempts - 1)
    )
    return attempts * float(config["STRIPE_TIMEOUT_SECONDS"]) + waits


def _check_lease(config: Mapping[str, Any]) -> None:
    # The lease is renewed before each Stripe step: it must outlast the longest step, or a
    # worker still retrying one would lose its operation to a second request mid-call.
    step = stripe_step_seconds(config)
    if float(config["OPERATION_LEASE_SECONDS"]) < step:
        raise ConfigError(
            f"OPERATION_LEASE_SECONDS ({float(config['OPERATION_LEASE_SECONDS']):g}) is shorter than one Stripe "
            f"step at worst ({step:g} s: STRIPE_RETRY_ATTEMPTS x STRIPE_TIMEOUT_SECONDS + backoff); raise it "
            "or lower those"
        )


RATE_LIMIT_SETTINGS = (
    "WEBHOOK_RATE_LIMIT",
    "AUTH_FAILURE_RATE_LIMIT",
    "LOGIN_RATE_LIMIT_PER_IP",
    "LOGIN_RATE_LIMIT_PER_ACCOUNT",
    "LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS",
)


def _check_rate_limit(name: str, value: Any) -> None:
    # Read per request by Flask-Limiter, which would only log a bad one and limit nothing.
    from limits import parse_many

    try:
        if not parse_many(value):
            raise ValueError
    except (ValueError, TypeError):
        raise ConfigError(f"{name} {value!r} is not a rate limit such as '30/minute' or '30 per minute'") from None


# stripe-python skips the age check of a signature at a tolerance of 0 (a year-old delivery
# verifies), and a long one lets a captured delivery be replayed for as long.
WEBHOOK_TOLERANCE_RANGE = (1, 600)


def _check_webhook_tolerance(value: Any) -> None:
    low, high = WEBHOOK_TOLERANCE_RANGE
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"WEBHOOK_TOLERANCE_SECONDS {value!r} is not a number of seconds") from None
    if not low <= seconds <= high:
        raise ConfigError(
            f"WEBHOOK_TOLERANCE_SECONDS is {seconds}: it must be between {low} and {high} "
            "(Stripe's default is 300); outside that, old signed deliveries could be replayed"
        )


def _check_api_base(url: Any) -> None:
    """Plain HTTP only to this machine (the emulator in demo mode, tests, staging checks): on
    any other host the secret key would cross the network in clear text."""
    from urllib.parse import urlsplit

    from urllib3.exceptions import LocationParseError
    from urllib3.util import parse_url

    from .control_chars import has_control

    text = str(url)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"STRIPE_API_BASE {url!r} must be an https:// URL (https://api.stripe.com)")
    # The host checked here must be the host the key is sent to. urllib.parse and urllib3 (which
    # sends the request) read some URLs differently -- a backslash ends urllib3's authority, not
    # urllib.parse's -- so anything an API base never needs is refused outright, and the two
    # readings of the host must agree.
    if "\\" in text or " " in text or has_control(text, beyond_ascii=True):
        raise ConfigError(
            f"STRIPE_API_BASE {url!r} contains a backslash, a space, a control or a non-ASCII "
            "character: write the plain URL (https://api.stripe.com)"
        )
    if "@" in parts.netloc:
        raise ConfigError(f"STRIPE_API_BASE {url!r} carries a user name or password: remove the part before '@'")
    try:
        client_host = (parse_url(text).host or "").strip("[]").lower()
    except LocationParseError:
        client_host = ""
    if not client_host or client_host != (parts.hostname or "").lower():
        raise ConfigError(f"STRIPE_API_BASE {url!r} has no clear host name: write the plain URL")
    if parts.scheme == "https":
        return
    if not _is_loopback(parts.hostname or ""):
        raise ConfigError(
            f"STRIPE_API_BASE {url!r} is plain http:// to another host: the secret key would be sent "
            "unencrypted. Use https:// (https://api.stripe.com), or http:// to a loopback address "
            "(127.0.0.1, ::1, localhost) for a local emulator"
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


METRICS_TOKEN_MIN_LENGTH = 16


def _check_metrics_token(token: Any) -> None:
    """A token an operator types is guessable when short: the per-IP failure limit slows a
    guesser, it does not stop many IPs."""
    if token and len(str(token)) < METRICS_TOKEN_MIN_LENGTH:
        raise ConfigError(
            f"METRICS_TOKEN is {len(str(token))} characters: use at least {METRICS_TOKEN_MIN_LENGTH} "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))" makes one)'
        )
