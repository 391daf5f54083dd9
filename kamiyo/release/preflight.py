"""`flask --app wsgi preflight`: is this configuration, database, Redis and Stripe account fit
to take a release? Gathers the facts; checks.py decides."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from ..extensions import db
from ..models import utcnow
from ..redis_client import redis_client
from ..scheduler.models import JobRun
from ..stripe_gateway.gateway import get_gateway
from ..versioning import queries as versioning
from ..webhooks import queries as webhooks
from .checks import (
    FAIL,
    WARN,
    Check,
    check_clock,
    check_migrations,
    check_redis,
    check_secrets,
    check_stripe,
    check_version_health,
    check_webhook_endpoint,
)

HOSTS_WINDOW = dt.timedelta(days=7)


def migration_chain() -> list[str]:
    """The code's revisions, base first (one linear history)."""
    from alembic.script import ScriptDirectory

    from .. import MIGRATIONS_DIR

    script = ScriptDirectory(MIGRATIONS_DIR)
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def database_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


# A database that accepts the connection and never answers (a firewall that drops, a hung
# server) would hold the release pipeline for ever: libpq waits without a limit by default.
CONNECT_TIMEOUT_SECONDS = 5


def _check_engine(url: URL) -> Engine:
    """An engine of the check's own, that changes nothing: PostgreSQL with a connect timeout,
    SQLite read-only (a mistyped path must not become a new, empty database)."""
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            target = Path(path).resolve().as_uri() + "?mode=ro"
            return create_engine("sqlite://", creator=lambda: sqlite3.connect(target, uri=True), poolclass=NullPool)
        return create_engine(url, poolclass=NullPool)
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return create_engine(url, connect_args=connect_args, poolclass=NullPool)


def check_database(new_database: bool = False) -> list[Check]:
    """`new_database`: a first install, whose migration makes the SQLite file; otherwise a
    missing file is a mistyped path, and fails."""
    url = db.engine.url
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        if not url.database.startswith("file:") and not Path(url.database).is_file():
            if new_database:
                return [
                    Check(
                        "database",
                        WARN,
                        f"no SQLite database yet at {Path(url.database).resolve()} (--new-database)",
                        "a first install: the release's flask --app wsgi db upgrade creates it",
                    )
                ]
            return [
                Check(
                    "database",
                    FAIL,
                    f"no SQLite database at {Path(url.database).resolve()}",
                    "fix DATABASE_URL (sqlite:////absolute/path), or restore the database there",
                )
            ]
    engine = _check_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            found = [Check("database", "ok", f"reachable ({url.get_backend_name()})")]
            try:
                found.append(check_migrations(database_revision(connection), migration_chain()))
            except SQLAlchemyError as exc:
                found.append(Check("migrations", FAIL, f"could not read alembic_version: {type(exc).__name__}"))
    except SQLAlchemyError as exc:
        return [
            Check(
                "database",
                FAIL,
                f"not reachable ({shown}): {type(exc).__name__}",
                "start the database or fix DATABASE_URL",
            )
        ]
    finally:
        engine.dispose()
    return found


def hosts_seen() -> int:
    """Hosts that ran a scheduled job lately: more than one means several hosts share the database."""
    try:
        return int(
            db.session.scalar(
                select(func.count(func.distinct(JobRun.host))).where(JobRun.started_at >= utcnow() - HOSTS_WINDOW)
            )
            or 0
        )
    except SQLAlchemyError:
        db.session.rollback()
        return 0


def check_redis_setup(workers: int, hosts: int) -> Check:
    config = current_app.config
    url = config.get("REDIS_URL") or None
    storage = config.get("RATELIMIT_STORAGE_URI") or ""
    if not url and str(storage).startswith(("redis://", "rediss://", "unix://")):
        url = storage
    reachable, error = None, None
    if url:
        try:
            reachable = bool(redis_client(url).ping())
        except Exception as exc:  # noqa: BLE001 -- any failure to answer is "not reachable"
            reachable, error = False, type(exc).__name__
    return check_redis(url, reachable, error, workers, hosts)


def web_concurrency() -> int:
    """gunicorn's workers, as gunicorn.conf.py reads them (2 when unset)."""
    try:
        return int(os.environ.get("WEB_CONCURRENCY", "2"))
    except ValueError:
        return 2


def run_preflight(hosts: int = 0, new_database: bool = False) -> tuple[list[Check], dict[str, Any]]:
    config = current_app.config
    checks = check_secrets(config)
    database = check_database(new_database)
    checks += database
    # The rest reads the database through the app's engine: only once it is known to answer.
    reachable = database[0].status == "ok"
    checks.append(check_redis_setup(web_concurrency(), max(hosts, hosts_seen() if reachable else 0)))

    probe = get_gateway().read_only_probe()
    checks.append(check_stripe(probe, config["STRIPE_API_BASE"]))
    if probe["ok"]:
        checks.append(
            check_webhook_endpoint(
                probe["endpoints"],
                config.get("PUBLIC_URL"),
                webhooks.handled_event_types(),
                config["STRIPE_API_VERSION"],
                probe.get("endpoints_error"),
            )
        )
    checks.append(check_version_health(versioning.current(), _last_check() if reachable else None))
    if probe["reachable"]:
        checks.append(check_clock(probe["date"], utcnow(), float(config["WEBHOOK_TOLERANCE_SECONDS"])))
    facts = {
        "stripe": {k: probe[k] for k in ("reachable", "ok", "error", "latency_ms")},
        "webhook_endpoints": probe["endpoints"],
    }
    return checks, facts


def _last_check() -> dict[str, Any] | None:
    try:
        row = versioning.latest_check()
    except SQLAlchemyError:
        db.session.rollback()
        return None
    if row is None:
        return None
    return {"status": row.status, "checked_at": row.checked_at.isoformat(), "mismatches": len(row.mismatches or [])}
