"""Settings that create_app's parts (the rate limiter, the logger, the database engine) read
and would die on with a traceback: checked by config.finalise, so that a release command
reports them as a failed check and the service refuses to start in one line.

Messages name the setting, never its value where that may hold a password (database and
Redis URLs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import ConfigError


def check_service_settings(config: Mapping[str, Any], environ: Mapping[str, str]) -> None:
    """Refused here, in one line, before anything starts. WEB_CONCURRENCY is gunicorn's, read
    from the environment by the rate limiters too."""
    workers = environ.get("WEB_CONCURRENCY")
    if workers is not None and not (workers.strip().isdigit() and int(workers) >= 1):
        raise ConfigError(f"WEB_CONCURRENCY {workers!r} is not a number of workers (1 or more; unset: 2)")
    _check_log_level(config.get("LOG_LEVEL"))
    redis_url = config.get("REDIS_URL")
    if redis_url:
        _check_redis_url("REDIS_URL", str(redis_url))
    storage = config.get("RATELIMIT_STORAGE_URI") or redis_url
    if storage:
        _check_storage_uri("RATELIMIT_STORAGE_URI" if config.get("RATELIMIT_STORAGE_URI") else "REDIS_URL", storage)
    _check_database_url(str(config["SQLALCHEMY_DATABASE_URI"]))


def _check_log_level(value: Any) -> None:
    import logging

    name = str(value).strip().upper()
    if not (name.isdigit() or name in logging.getLevelNamesMapping()):
        raise ConfigError(f"LOG_LEVEL {value!r} is not a log level (DEBUG, INFO, WARNING, ERROR or CRITICAL)")


def _check_redis_url(name: str, url: str) -> None:
    from redis.connection import parse_url

    try:
        parse_url(url)
    except ValueError:
        # Not the value itself: it may hold Redis's password.
        raise ConfigError(
            f"{name} is not a Redis URL (redis://[:PASSWORD@]HOST:PORT/DB, rediss://... or unix:///PATH)"
        ) from None


def _check_storage_uri(name: str, uri: Any) -> None:
    from urllib.parse import urlsplit

    from limits._storage_scheme import SCHEMES  # the schemes Flask-Limiter's storage takes

    text = str(uri)
    scheme = urlsplit(text).scheme
    if scheme not in SCHEMES or not text.startswith(scheme + "://"):
        raise ConfigError(
            f"{name} is not a rate-limit storage URL Flask-Limiter knows (redis://HOST:PORT/DB, rediss://..., "
            "redis+unix:///PATH or memory://)"
        )
    if scheme in ("redis", "rediss"):
        _check_redis_url(name, text)


SUPPORTED_DATABASES = ("postgresql", "sqlite")


def _check_database_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    expected = "postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:////PATH"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # Not the value itself: it holds the database's password.
        raise ConfigError(
            f"DATABASE_URL is not a database URL (expected {expected}; a space or quote around it, or a port "
            "that is not a number?)"
        ) from None
    if parsed.get_backend_name() not in SUPPORTED_DATABASES:
        raise ConfigError(
            f"DATABASE_URL is a {parsed.get_backend_name()} database: the service runs on PostgreSQL or SQLite "
            f"({expected})"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, ImportError):
        raise ConfigError(
            f"DATABASE_URL names the driver {parsed.drivername!r}, which is not installed (postgresql:// uses "
            "psycopg, in requirements.txt)"
        ) from None
