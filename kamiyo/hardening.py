"""Files at rest and settings that weaken security: checked when the service starts.

The instance folder holds the SQLite database (customer PII, webhook payloads, key and
password hashes), the demo's secrets and its credentials: only the service's own user may
read it. Entry points set the umask to 077 (wsgi.py, gunicorn.conf.py, devtools/run.py), so
what the service creates is private; what an older version or another tool created may not
be, and start-up says so with the command that fixes it.
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("kamiyo.security")

UMASK = 0o077
INSTANCE_MODE = 0o700


def set_umask() -> None:
    """Files and folders this process creates are its user's alone (0600, 0700)."""
    os.umask(UMASK)


def secure_instance(instance_path: str) -> None:
    """Create the instance folder 0700, and tighten it to 0700 if it is ours and looser.

    A folder we cannot create or change (a read-only install, another owner) is left as it
    is: `permission_problems` reports it.
    """
    path = Path(instance_path)
    try:
        path.mkdir(mode=INSTANCE_MODE, parents=True, exist_ok=True)
        info = path.stat()
        if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == os.geteuid():
            path.chmod(INSTANCE_MODE)
    except OSError:
        pass


def sqlite_files(database_uri: str) -> list[Path]:
    """The SQLite database file and its -wal/-shm/-journal companions (none for PostgreSQL)."""
    if not database_uri.startswith("sqlite"):
        return []
    from sqlalchemy.engine import make_url

    database = make_url(database_uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return []
    main = Path(database)
    return [main] + [main.with_name(main.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def permission_problems(instance_path: str, database_uri: str) -> list[tuple[Path, int, int]]:
    """(path, its mode, the mode it should have) for each file or folder other users can read."""
    found = []
    for path, wanted in [(Path(instance_path), INSTANCE_MODE)] + [(p, 0o600) for p in sqlite_files(database_uri)]:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:  # not there (yet): nothing to read
            continue
        if mode & 0o077:
            found.append((path, mode, wanted))
    return found


def warn_about_permissions(instance_path: str, database_uri: str) -> bool:
    """One WARNING line, with the commands that fix it, when other users can read our files."""
    problems = permission_problems(instance_path, database_uri)
    if not problems:
        return False
    listed = ", ".join(f"{path} ({mode:04o})" for path, mode, _ in problems)
    fixes = " && ".join(f"chmod {wanted:o} {shlex.quote(str(path))}" for path, _, wanted in problems)
    log.warning(
        "files readable by other users: %s. They hold customer data and secrets; fix: %s",
        listed,
        fixes,
        extra={"event": "insecure_file_permissions"},
    )
    return True


def warn_about_settings(config: Mapping[str, Any]) -> list[str]:
    """Loud WARNING lines for settings that leave something open; returns what was warned about."""
    warned = []
    if not config.get("DEMO_MODE") and not config.get("METRICS_TOKEN"):
        log.warning(
            "METRICS_TOKEN is not set: GET /metrics is public (request counts, Stripe errors, breaker "
            "state, webhook backlog). Set METRICS_TOKEN, and give the scraper that token as its bearer token",
            extra={"event": "insecure_setting", "setting": "METRICS_TOKEN"},
        )
        warned.append("METRICS_TOKEN")
    from .stripe_gateway.library import STRIPE_LOG_IGNORED

    if STRIPE_LOG_IGNORED:
        log.warning(
            "STRIPE_LOG is set and ignored: stripe-python would print request and response bodies to "
            "stderr, past log redaction. Unset it: stripe's own log lines still reach the (redacted) log",
            extra={"event": "insecure_setting", "setting": "STRIPE_LOG"},
        )
        warned.append("STRIPE_LOG")
    return warned


def server_start_checks(config: Mapping[str, Any], instance_path: str) -> None:
    """What a server (gunicorn's master, once per start) warns about before serving."""
    warn_about_settings(config)
    warn_about_permissions(instance_path, config["SQLALCHEMY_DATABASE_URI"])
