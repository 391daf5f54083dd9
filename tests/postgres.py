"""A throwaway PostgreSQL cluster for one test session (used by the fixtures in conftest.py).

`initdb` makes a cluster (trust authentication, UTF8, no fsync), `pg_ctl`
starts it on a free loopback port with its unix socket inside the cluster
directory, and stops it (`-m immediate`) at the end: nothing of it outlives
the session. The data lives in /dev/shm when there is room (no disk I/O at
all), else in a temporary directory.

initdb and postgres refuse to run as root: as root they run as the `postgres`
system user (`runuser`), which then owns the cluster directory.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "postgres"
SHM = Path("/dev/shm")
SHM_MIN_FREE = 1 << 30  # 1 GiB

# Speed over durability: the cluster is thrown away after the session.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",  # every test app has a pool; concurrency tests run 20 threads and more
    "shared_buffers": "64MB",
    "max_wal_size": "1GB",  # no checkpoints forced by WAL volume during a session
    "timezone": "'America/St_Johns'",  # not UTC (nor a whole hour): stored times must not depend on it
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",  # expected errors (duplicate keys) need not fill the log
}


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries (or a user to run them as) are missing."""


def find_bindir() -> Path:
    """The directory with initdb, pg_ctl and postgres: PATH first, then Debian's newest version."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    debian = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    debian.sort(key=lambda path: [int(n) for n in re.findall(r"\d+", path)], reverse=True)
    candidates += [Path(path).parent for path in debian]
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH "
                              "or in /usr/lib/postgresql/*/bin")


def cluster_parent(fallback: Path) -> Path:
    """/dev/shm when it has room; else `fallback` (pytest's temporary directory).

    As root the cluster belongs to the postgres user, who cannot enter
    pytest's private (0700) temporary directories: then the system's
    temporary directory is the fallback.
    """
    try:
        if os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free >= SHM_MIN_FREE:
            return SHM
    except OSError:
        pass
    return Path(tempfile.gettempdir()) if os.geteuid() == 0 else fallback


PREFIX = "kamiyo-pg-"
OWNER_FILE = "owner.pid"  # the pytest process the cluster belongs to


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep_orphans(parent: Path) -> list[Path]:
    """Stop and delete the clusters of sessions that died without their teardown (SIGKILL):
    a postgres left running would hold memory and a port until the machine restarts."""
    swept = []
    for directory in parent.glob(PREFIX + "*"):
        try:
            owner = int((directory / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or being set up right now
        if _alive(owner):
            continue
        try:
            os.kill(int((directory / "data" / "postmaster.pid").read_text().split()[0]), signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            pass  # not running
        shutil.rmtree(directory, ignore_errors=True)
        swept.append(directory)
    return swept


class PostgresCluster:
    def __init__(self, parent: Path) -> None:
        self.bindir = find_bindir()
        self.run_as: list[str] = []
        self.owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            try:
                self.owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise PostgresUnavailable("running as root, and there is no `postgres` system user to run "
                                          "PostgreSQL as (the Debian package creates it)") from None
            if runuser is None:
                raise PostgresUnavailable("running as root, and `runuser` is missing")
            self.run_as = [runuser, "-u", SUPERUSER, "--"]
        self.directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
        (self.directory / OWNER_FILE).write_text(str(os.getpid()))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.port: int | None = None
        self._names = itertools.count(1)
        self._admin = None

    # -- lifecycle -------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self.run_as, str(self.bindir / args[0]), *args[1:]]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "LC_ALL": "C"}, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n--- postgres.log ---\n" + "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def init(self) -> None:
        if self.owner is not None:
            os.chown(self.directory, self.owner.pw_uid, self.owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust", "--auth-host=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
        settings = dict(SETTINGS, unix_socket_directories=f"'{self.directory}'")
        with open(self.data / "postgresql.conf", "a") as conf:  # appending keeps the file's owner
            conf.write("\n# kamiyo test session\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def start(self, port: int) -> None:
        self.port = port
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", f"-p {port}", "-w", "-t", "60",
                  "start")

    def stop(self) -> None:
        """Stop the server (if running) and delete the cluster; safe to call twice."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)  # children exit when the postmaster is gone
        except (OSError, ValueError, IndexError):
            pass

    # -- databases -------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self):
        """An autocommit connection to the `postgres` database (CREATE/DROP DATABASE)."""
        if self._admin is None:
            import psycopg

            self._admin = psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                                          autocommit=True)
        return self._admin

    def execute(self, sql: str) -> None:
        self.admin().execute(sql)

    def new_name(self, prefix: str = "test") -> str:
        return f"{prefix}_{next(self._names)}"

    def create_database(self, name: str, template: str | None = None) -> str:
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        # FORCE: connections still open (a detached connection, a thread that
        # outlived its test) are terminated instead of blocking the drop.
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def mark_template(self, name: str) -> None:
        """Nobody may connect any more: CREATE DATABASE ... TEMPLATE needs it unused."""
        self.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
