"""The running service's hold on its database, which `flask db restore` must have alone.

Every web process (gunicorn worker, `flask run`) and `flask scheduler run` holds a shared
lock on its database for as long as it lives; a restore takes the same lock exclusively.
A lock, not a list of processes looked at: the kernel or PostgreSQL drops it when its
holder dies however it dies, and neither side can slip in between the other's check and
its work (a service that starts during a restore is refused, and says why).

- SQLite: flock() on a file beside the database (`<db>-service.lock`). Holders are named
  from /proc/locks.
- PostgreSQL: a session advisory lock, on a connection of its own kept for the
  process's life and named by `application_name` (`kamiyo-web <host> pid <N>`); a web
  process's pooled connections are named the same. A restore also refuses while
  such named sessions are connected (a holder whose lock connection was cut, say).
  A PostgreSQL restart, a failover or an idle-session kill ends that session and the
  lock with it: a watchdog thread checks the connection every WATCHDOG_SECONDS and
  takes the lock again on a new one. A restore, once it has the lock, waits SETTLE_SECONDS
  for such a holder to come back (and refuses when one does). A holder that comes back
  to find a restore under way stops the process (CRITICAL, exit 1): it must not serve a
  database being replaced; systemd or gunicorn starts it again, refused until the
  restore has finished.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.engine import make_url

from .config import ConfigError

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x4B4D5952  # "KMYR": under 2**31, so pg_locks shows it whole in objid
APPLICATION_PREFIX = "kamiyo-"
HOW_TO_STOP = (
    "Stop it on every host first (`systemctl stop kamiyo-web kamiyo-scheduler`, or Ctrl-C `make run`), "
    "then run the restore again"
)

CONNECT_TIMEOUT_SECONDS = 3
WATCHDOG_SECONDS = 2.0  # how often a holder checks its lock's connection (and retries one lost)
# A restore waits this long with the lock before it begins: a holder whose connection was cut
# is back within one check and a connection.
SETTLE_SECONDS = WATCHDOG_SECONDS + CONNECT_TIMEOUT_SECONDS
# A holder back on a new connection that finds the lock taken waits this long for it: a restore
# still settling sees the holder and gives up within a fraction of a second.
RETAKE_WAIT_SECONDS = 2.0
# Keepalives and a send timeout: a connection to a host gone silent is found dead, not waited on.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
}
_held: list[Any] = []  # file descriptors and connections kept for the life of the process


class ServiceRunning(Exception):
    """A restore was refused: the service runs against the database."""


class RestoreInProgress(ConfigError):
    """This process may not start serving: a restore has the database."""


def serving(app: Flask) -> bool:
    """Whether this process is the service (a server), not a one-off command or a test."""
    from .observability.logging import one_off_command

    return not app.config.get("TESTING") and not one_off_command()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite"):
        return None
    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


def lock_file(uri: str) -> Path | None:
    path = _sqlite_path(uri)
    return None if path is None else path.with_name(path.name + "-service.lock")


def application_name(role: str) -> str:
    return f"{APPLICATION_PREFIX}{role} {socket.gethostname()} pid {os.getpid()}"[:63]


def name_connections(app: Flask, role: str) -> None:
    """PostgreSQL: name this process's pooled connections (before the engine is made)."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        options = app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {})
        options.setdefault("connect_args", {}).setdefault("application_name", application_name(role))


def hold(app: Flask, role: str) -> None:
    """Hold the service's shared lock until this process ends; refuse to start during a restore.
    A test's app (TESTING) is not the service and holds nothing."""
    if app.config.get("TESTING"):
        return
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    refused = RestoreInProgress(
        f"a database restore is running against {describe_database(uri)}: start the {role} after it has finished"
    )
    if uri.startswith("sqlite"):
        path = lock_file(uri)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise refused from None
        _held.append(fd)
    elif uri.startswith("postgresql"):
        import psycopg

        connection = None
        try:
            connection = _hold_postgresql(uri, role)
        except psycopg.OperationalError as exc:
            # Start-up does not wait for the database (a web process answers /health with 503
            # meanwhile): the lock is taken as soon as the database answers.
            log.warning(
                "service lock not taken yet, the database does not answer; retrying in the background",
                extra={"error": _first_line(exc)},
            )
        else:
            if connection is None:
                raise refused
        threading.Thread(
            target=_watch_postgresql, args=(uri, role, connection), name="kamiyo-service-lock", daemon=True
        ).start()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _hold_postgresql(uri: str, role: str, wait: float = 0.0) -> Any:
    """A new connection holding the shared lock, or None when a restore holds it (after waiting
    up to `wait` seconds for it). OperationalError when the database does not answer."""
    import psycopg

    conninfo = make_url(uri).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = psycopg.connect(
        conninfo,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        application_name=application_name(role),
        autocommit=True,
        **KEEPALIVES,
    )
    deadline = time.monotonic() + wait
    try:
        while True:
            row = connection.execute("SELECT pg_try_advisory_lock_shared(%s)", (ADVISORY_KEY,)).fetchone()
            if row and row[0]:
                _held.append(connection)
                return connection
            if time.monotonic() >= deadline:
                connection.close()
                return None
            time.sleep(0.1)
    except BaseException:
        connection.close()
        raise


def _alive(connection: Any) -> bool:
    import psycopg

    try:
        connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _watch_postgresql(uri: str, role: str, connection: Any) -> None:
    """For the process's life: take the lock again whenever its connection is lost."""
    import psycopg

    while True:
        time.sleep(WATCHDOG_SECONDS)
        if connection is not None:
            if _alive(connection):
                continue
            log.warning("service lock lost with its database connection (a PostgreSQL restart?); taking it again")
            if connection in _held:
                _held.remove(connection)
            try:
                connection.close()
            except psycopg.Error:
                pass
            connection = None
        try:
            connection = _hold_postgresql(uri, role, wait=RETAKE_WAIT_SECONDS)
        except psycopg.OperationalError:
            continue  # the database is not back yet: the next check tries again
        if connection is None:
            _stop_serving(uri, role)
            return
        log.warning("service lock taken")


def _stop_serving(uri: str, role: str) -> None:
    """A restore has the database while this process was without its lock: it must not serve
    a database being replaced. Exit now; systemd or gunicorn starts it again, and it is refused
    until the restore has finished."""
    log.critical(
        "a database restore is running against %s and this %s lost its service lock: stopping",
        describe_database(uri),
        role,
    )
    for handler in logging.getLogger().handlers + log.handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001  # exiting regardless
            pass
    os._exit(1)


def describe_database(uri: str) -> str:
    path = _sqlite_path(uri)
    if path is not None:
        return str(path)
    return make_url(uri).render_as_string(hide_password=True)


@contextmanager
def exclusive(app: Flask) -> Iterator[None]:
    """The database to ourselves while the block runs, or ServiceRunning naming who has it.
    PostgreSQL: it first waits SETTLE_SECONDS for a holder whose connection was cut to come
    back."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        path = lock_file(uri)
        if path is None:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise
                holders = _flock_holders(os.fstat(fd).st_ino)
                raise ServiceRunning(_refusal(uri, holders)) from None
            yield
        finally:
            os.close(fd)
        return
    from .extensions import db

    with db.engine.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        locked = connection.exec_driver_sql("SELECT pg_try_advisory_lock(%(key)s)", {"key": ADVISORY_KEY}).scalar()
        try:
            sessions = _service_sessions(connection)
            if locked and not sessions:
                # A holder whose connection was cut (a PostgreSQL restart) is still serving and is
                # back within one watchdog check: give it that time to show itself.
                deadline = time.monotonic() + SETTLE_SECONDS
                while not sessions and time.monotonic() < deadline:
                    time.sleep(0.2)
                    sessions = _service_sessions(connection)
            if not locked or sessions:
                holders = [
                    f"{name or 'an unnamed session'} ({count} connection{'s' if count > 1 else ''} from "
                    f"{(addr or 'the local socket').removesuffix('/32')}, since "
                    f"{start.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)"
                    for name, addr, count, start in sessions
                ]
                raise ServiceRunning(_refusal(uri, holders))
            yield
        finally:
            if locked:
                connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": ADVISORY_KEY})


def _service_sessions(connection: Any) -> list[Any]:
    """The service's sessions on the database: named as ours, or holding the lock."""
    return list(
        connection.exec_driver_sql(
            "SELECT application_name, client_addr::text, count(*), min(backend_start) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid() AND (application_name LIKE"
            " %(prefix)s OR pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 0"
            " AND objid = %(key)s AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()))) GROUP BY 1, 2 ORDER BY 1, 2",
            {"prefix": APPLICATION_PREFIX + "%", "key": ADVISORY_KEY},
        ).all()
    )


def _refusal(uri: str, holders: list[str]) -> str:
    running = "; ".join(holders) if holders else "a process holding its service lock"
    return f"refusing to restore: the service is running against {describe_database(uri)}: {running}. {HOW_TO_STOP}."


def _flock_holders(inode: int) -> list[str]:
    """The processes holding a flock on `inode`, from /proc/locks (Linux), described."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(fields[4]))
    found = []
    for pid in sorted(set(pids)):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            command = ""
        found.append(f"pid {pid}" + (f" ({command.strip()[:120]})" if command.strip() else ""))
    return found
