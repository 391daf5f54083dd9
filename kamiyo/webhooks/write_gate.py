"""Queue SQLite writers instead of letting them poll.

SQLite takes one writer at a time. A writer that finds the database locked
sleeps in SQLite's busy handler (1, 2, 5, 10 ... ms) and polls again, so under
a burst of webhooks most of the time goes to sleeping, and a busy writer can
starve the others. The gate queues the inbox's write transactions instead: a
thread lock inside the process, and an flock(2) on a file next to the
database across gunicorn workers; both wake the next writer at once.

PostgreSQL locks rows, not the database: there the gate does nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator

from flask import current_app
from sqlalchemy.engine import make_url

EXTENSION = "kamiyo_write_gate"


class WriteGate:
    def __init__(self, lock_path: str | None) -> None:
        self.lock_path = lock_path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid: int | None = None

    def _file(self) -> int:
        # One open file per process: an flock on a descriptor inherited across
        # fork would be shared with the parent, and exclude nobody.
        if self._fd is None or self._pid != os.getpid():
            assert self.lock_path is not None  # only SQLite gates, and SQLite always has a path
            self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self.lock_path is None:
            yield
            return
        with self._thread_lock:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


def _lock_path(database_uri: str) -> str | None:
    url = make_url(database_uri)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database + ".write-lock"


def write_gate() -> WriteGate:
    """The app's gate (made on first use, in the worker that uses it)."""
    gate = current_app.extensions.get(EXTENSION)
    if gate is None:
        gate = current_app.extensions.setdefault(
            EXTENSION,
            WriteGate(
                _lock_path(current_app.config["SQLALCHEMY_DATABASE_URI"])
                if current_app.config["WEBHOOK_WRITE_GATE"]
                else None
            ),
        )
    return gate
