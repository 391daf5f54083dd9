"""`flask db backup [FOLDER]` and `flask db restore PATH`: backups that restore.

A backup is one file, consistent while the service runs: SQLite's online backup API, or
`pg_dump -Fc` (Debian's postgresql-client) for PostgreSQL. It is named by its database and
time (`kamiyo-<kind>-<database id>-<UTC time>.<sqlite3|dump>`; the id is a short hash of the
SQLite path or of PostgreSQL's host, port and name, so databases can share a folder), written
under a temporary name and renamed when complete, with its SHA-256 beside it (`<file>.sha256`,
as `sha256sum` writes it). Backups hold customers' emails: the files are 0600 and a folder we
make is 0700. The last BACKUP_KEEP backups of the same database in the folder are kept, the one
just written always among them; older ones (named as ours, nothing else) and temporary files
left by a backup that died are removed.

A restore checks the checksum, the kind of file against the database, that the file is one of
ours (a SQLite backup: sound, our tables, a migration the code knows), asks (or takes --yes),
and runs only with the database to itself (kamiyo/service_lock.py): SQLite's backup API the
other way, or `pg_restore --clean --if-exists --single-transaction`.

A restore does not undo security decisions taken since the backup: API keys revoked and
dashboard users disabled now stay so (matched by key hash and email), sessions ended now stay
ended (each user's session version never goes down), and the audit entries written since the
backup are put back. The restore itself is an audit entry (restore-database).
"""

from __future__ import annotations

import datetime as dt
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import insert, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from . import audit, service_lock

DEFAULT_FOLDER = "backups"  # in the instance folder
NAME = re.compile(r"^kamiyo-(sqlite|postgresql)-([0-9a-f]{8})-(\d{8}T\d{6}-\d{6}Z)\.(sqlite3|dump)$")
PARTIAL = re.compile(r"^\.kamiyo-(sqlite|postgresql)-([0-9a-f]{8})-.*\.partial$")
STALE_PARTIAL_SECONDS = 3600  # a temporary file this old belongs to a backup that died
# pg_dump and pg_restore give up on a database that does not answer, instead of waiting for
# ever (libpq's default); an operator's own PGCONNECT_TIMEOUT wins.
PG_CONNECT_TIMEOUT_SECONDS = 10
EXTENSIONS = {"sqlite": "sqlite3", "postgresql": "dump"}
MAGIC = {"sqlite": b"SQLite format 3\x00", "postgresql": b"PGDMP"}
# Tables every Kamiyo database has had since its first migration: a file without them is
# another program's.
CORE_TABLES = {"alembic_version", "api_keys", "customers", "subscriptions"}


class BackupError(click.ClickException):
    """A backup or restore that cannot go on, said in one line."""


@dataclass
class Backup:
    path: Path
    size: int
    sha256: str
    removed: list[Path] = field(default_factory=list)


def database_kind(uri: str) -> str:
    for kind in EXTENSIONS:
        if uri.startswith(kind):
            return kind
    raise BackupError(f"backups cover SQLite and PostgreSQL only, not {uri.split(':', 1)[0]}")


def database_id(uri: str) -> str:
    """A short, stable name for the database a URI points at (no user, no password): the
    SQLite file's path, or PostgreSQL's host, port and database."""
    url = make_url(uri)
    if uri.startswith("sqlite"):
        where = str(service_lock._sqlite_path(uri) or url.database or "")
    else:
        host = url.host or url.query.get("host") or "localhost"
        where = f"{host}:{url.port or 5432}/{url.database or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:8]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _private_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _prepare_folder(folder: Path) -> None:
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700)
        folder.chmod(0o700)  # mkdir's mode is cut by the umask
    elif not folder.is_dir():
        raise BackupError(f"{folder} is not a folder: give the folder the backups go to")
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        click.echo(
            f"Warning: {folder} can be read by other users (mode {mode:o}); backups hold customers' emails: "
            f"chmod 700 {folder}",
            err=True,
        )


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    versions = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    versions.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
    if versions:
        return versions[0]
    raise BackupError(
        f"{name} is not installed: install Debian's postgresql-client (apt-get install postgresql-client)"
    )


def _libpq(uri: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string without the password, and the environment that carries it
    (never on a command line, where `ps` shows it)."""
    url = make_url(uri)
    env = {**os.environ}
    env.setdefault("PGCONNECT_TIMEOUT", str(PG_CONNECT_TIMEOUT_SECONDS))
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    conninfo = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return conninfo, env


def _run(command: list[str], env: dict[str, str], **kwargs) -> None:
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BackupError(f"{Path(command[0]).name} failed ({result.returncode}): {' / '.join(said) or 'no message'}")


class _Stopped(Exception):
    """SIGTERM or SIGHUP during a backup: unwinds it like Ctrl-C, so its temporary file goes."""


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP (systemd stopping a backup that outlived its timeout, a closed
    terminal) raise inside the backup instead of ending the process where it stands: the
    `finally` clauses run, a running pg_dump is killed and the temporary file removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _write_failed(folder: Path, exc: BaseException) -> BackupError:
    """A file that could not be read or written (the disk full, say), in one line."""
    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()
    )
    if full:
        return BackupError(
            f"no space left on the disk of {folder}: nothing was kept. Free space there (older backups?) "
            "or back up into another folder: flask --app wsgi db backup FOLDER"
        )
    said = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return BackupError(f"the backup failed ({said}); nothing was kept in {folder}")


def make_backup(app: Flask, folder: Path, keep: int) -> Backup:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    kind = database_kind(uri)
    folder = folder.resolve()
    _prepare_folder(folder)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S-%fZ")
    path = folder / f"kamiyo-{kind}-{database_id(uri)}-{stamp}.{EXTENSIONS[kind]}"
    partial = path.with_name("." + path.name + ".partial")
    sums = checksum_file(path)
    with _signals_unwind():
        try:
            _private_file(partial)
            if kind == "sqlite":
                source = service_lock._sqlite_path(uri)
                if source is None or not source.exists():
                    raise BackupError(f"no SQLite database at {source or uri}: nothing to back up")
                _sqlite_copy(source, partial)
            else:
                conninfo, env = _libpq(uri)
                with open(partial, "wb") as out:
                    _run(
                        [_pg_tool("pg_dump"), "--format=custom", "--no-password", f"--dbname={conninfo}"],
                        env,
                        stdout=out,
                    )
                    os.fsync(out.fileno())
            digest = sha256_of(partial)
            _private_file(sums)
            with open(sums, "w") as fh:
                fh.write(f"{digest}  {path.name}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, path)
        except BaseException as exc:
            partial.unlink(missing_ok=True)
            if not path.exists():
                sums.unlink(missing_ok=True)
            if isinstance(exc, (OSError, sqlite3.Error)):
                raise _write_failed(folder, exc) from None
            if isinstance(exc, _Stopped):
                raise BackupError(f"stopped by {exc}: nothing was kept") from None
            raise
    return Backup(path, path.stat().st_size, digest, removed=_prune(folder, keep, path))


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (WAL included), as one self-contained file."""
    src = sqlite3.connect(source.as_uri() + "?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # no -wal/-shm beside the backup
        dst.commit()
    finally:
        dst.close()
        src.close()
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())


def backups_in(folder: Path, database: str | None = None) -> list[Path]:
    """Our backups in `folder` (of one database, given its id), oldest first (their names sort
    by time)."""
    found = []
    for p in folder.iterdir():
        match = NAME.match(p.name)
        if match and (database is None or match.group(2) == database) and p.is_file():
            found.append((match.group(3), p))
    return [p for _, p in sorted(found)]


def _prune(folder: Path, keep: int, made: Path) -> list[Path]:
    """Keep `made` and the newest keep - 1 other backups of its database; remove the rest, and
    that database's temporary files left by a backup that died."""
    database = NAME.match(made.name).group(2)  # type: ignore[union-attr]
    others = [p for p in backups_in(folder, database) if p != made]
    removed = others[: max(len(others) - (keep - 1), 0)]
    for path in removed:
        path.unlink(missing_ok=True)
        checksum_file(path).unlink(missing_ok=True)
    stale = time.time() - STALE_PARTIAL_SECONDS
    for path in folder.iterdir():
        match = PARTIAL.match(path.name)
        if match and match.group(2) == database and path.is_file() and path.stat().st_mtime < stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def verify(path: Path, kind: str) -> str:
    """The backup's checksum, once it matches its .sha256 and the file is a `kind` backup."""
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    sums = checksum_file(path)
    try:
        expected = sums.read_text().split()[0].lower()
    except (OSError, IndexError):
        raise BackupError(
            f"no checksum beside {path} ({sums.name}): every `db backup` writes one. For a file you trust "
            f"from elsewhere: sha256sum {path.name} > {sums.name}"
        ) from None
    actual = sha256_of(path)
    if actual != expected:
        raise BackupError(
            f"refusing to restore {path}: its content does not match its checksum ({sums.name} says "
            f"{expected[:16]}..., the file is {actual[:16]}...); it is damaged or was changed: restore another backup"
        )
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head.startswith(MAGIC[kind]):
        other = next((k for k, magic in MAGIC.items() if head.startswith(magic)), None)
        raise BackupError(
            f"{path} is {'a ' + other if other else 'not a'} backup, and this database is {kind}: "
            "restore a backup of the same kind of database"
        )
    return actual


def known_revisions(app: Flask) -> set[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())
    return {revision.revision for revision in script.walk_revisions()}


def check_ours(app: Flask, path: Path, kind: str) -> None:
    """Refuse a file that passed its checksum yet is not a sound backup of a Kamiyo database:
    one cut short (with a checksum made again for the copy), or another program's."""
    if kind == "sqlite":
        try:
            source = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                sound = source.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                tables = {row[0] for row in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                revisions = (
                    {row[0] for row in source.execute("SELECT version_num FROM alembic_version")}
                    if sound and "alembic_version" in tables
                    else set()
                )
            finally:
                source.close()
        except sqlite3.DatabaseError as exc:
            sound, reason = False, str(exc)
        else:
            reason = "quick_check failed"
        if not sound:
            raise BackupError(
                f"refusing to restore {path}: it is not a sound SQLite database ({reason}); cut short or "
                "damaged: restore another backup"
            )
    else:
        listing = subprocess.run(
            [_pg_tool("pg_restore"), "--list", str(path)], capture_output=True, stdin=subprocess.DEVNULL, text=True
        )
        if listing.returncode != 0:
            said = " / ".join(listing.stderr.strip().splitlines()[-2:]) or "no message"
            raise BackupError(f"refusing to restore {path}: pg_restore cannot read it ({said}); restore another backup")
        tables = {name for _, name in re.findall(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ", listing.stdout, re.MULTILINE)}
        revisions = None  # the rows are inside the dump: the table names must do
    missing = sorted(CORE_TABLES - tables)
    if missing:
        raise BackupError(
            f"refusing to restore {path}: it is not a backup of a Kamiyo database (no {', '.join(missing)} "
            "table); pick the right file"
        )
    if revisions is not None:
        unknown = sorted(revisions - known_revisions(app))
        if not revisions or unknown:
            raise BackupError(
                f"refusing to restore {path}: its migration {', '.join(unknown) or 'is not recorded'} is not one "
                "this release knows; restore it with the release that made it"
            )


@dataclass
class CarryOver:
    """What the database holds now that a restore must not undo."""

    revoked_keys: list[dict[str, Any]] = field(default_factory=list)  # key_hash, revoked_at, id, prefix
    users: list[dict[str, Any]] = field(default_factory=list)  # email, disabled_at, session_version
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    unreadable: str | None = None  # why nothing could be read (a fresh, empty database, say)


AUDIT_COLUMNS = ("occurred_at", "actor", "action", "target", "outcome", "detail", "client_ip")


def read_carry_over() -> CarryOver:
    """The revocations, disabled users, session versions and audit entries of the database as
    it is, before a restore replaces it."""
    from .extensions import db
    from .models import ApiKey, AuditEntry, DashboardUser

    carry = CarryOver()
    try:
        carry.revoked_keys = [
            dict(row._mapping)
            for row in db.session.execute(
                select(ApiKey.key_hash, ApiKey.revoked_at, ApiKey.id, ApiKey.prefix).where(
                    ApiKey.revoked_at.is_not(None)
                )
            )
        ]
        carry.users = [
            dict(row._mapping)
            for row in db.session.execute(
                select(DashboardUser.email, DashboardUser.disabled_at, DashboardUser.session_version)
            )
        ]
        columns = [getattr(AuditEntry, name) for name in AUDIT_COLUMNS]
        carry.audit_rows = [dict(row._mapping) for row in db.session.execute(select(*columns).order_by(AuditEntry.id))]
    except SQLAlchemyError as exc:
        carry = CarryOver(unreadable=type(exc).__name__)
    finally:
        db.session.remove()
    return carry


def apply_carry_over(carry: CarryOver) -> str:
    """Re-apply `carry` to the restored database, in one transaction; says what it did."""
    from .extensions import db
    from .models import ApiKey, DashboardUser

    session = db.session

    def changed(statement) -> int:
        return int(getattr(session.execute(statement), "rowcount", 0))

    revoked = disabled = sessions = 0
    for key in carry.revoked_keys:
        revoked += changed(
            update(ApiKey)
            .where(ApiKey.key_hash == key["key_hash"])
            .where(or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > key["revoked_at"]))
            .values(revoked_at=key["revoked_at"])
        )
    for user in carry.users:
        if user["disabled_at"] is not None:
            disabled += changed(
                update(DashboardUser)
                .where(DashboardUser.email == user["email"], DashboardUser.disabled_at.is_(None))
                .values(disabled_at=user["disabled_at"])
            )
        sessions += changed(
            update(DashboardUser)
            .where(DashboardUser.email == user["email"], DashboardUser.session_version < user["session_version"])
            .values(session_version=user["session_version"])
        )
    # Committed apart, first: a revocation holds even if the audit entries cannot be put back.
    session.commit()
    done = f"{revoked} key revocation(s), {disabled} disabled user(s), {sessions} ended session version(s)"
    try:
        count = _put_back_audit(carry)
    except SQLAlchemyError as exc:
        session.rollback()
        raise AuditNotCarried(done, type(exc).__name__) from None
    return f"{done} and {count} audit entr{'y' if count == 1 else 'ies'} written since the backup"


class AuditNotCarried(Exception):
    def __init__(self, done: str, why: str) -> None:
        super().__init__(why)
        self.done, self.why = done, why


def _put_back_audit(carry: CarryOver) -> int:
    from .extensions import db
    from .models import AuditEntry

    session = db.session
    # The restored log's newest entry marks the backup's time: what came after is put back.
    newest = session.scalar(select(AuditEntry.occurred_at).order_by(AuditEntry.occurred_at.desc()).limit(1))
    rows = [row for row in carry.audit_rows if newest is None or row["occurred_at"] > newest]
    if rows:
        session.execute(insert(AuditEntry), rows)
    session.commit()
    return len(rows)


def _save_carry_over(app: Flask, carry: CarryOver) -> Path:
    """Where an operator finds what could not be re-applied (0600: it names keys and users)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S-%fZ")
    path = Path(app.instance_path) / f"restore-carry-over-{stamp}.json"
    _private_file(path)
    path.write_text(
        json.dumps(
            {
                "revoked_keys": [
                    {"id": k["id"], "prefix": k["prefix"], "revoked_at": k["revoked_at"]} for k in carry.revoked_keys
                ],
                "disabled_users": [u for u in carry.users if u["disabled_at"] is not None],
                "audit_events": carry.audit_rows,
            },
            default=str,
            indent=1,
        )
    )
    return path


def restore(app: Flask, path: Path) -> tuple[list[str], str]:
    """Replace the database's content with the backup's (the caller verified it), re-applying
    what must not be undone (read before, applied after, the database ours alone throughout).
    Returns the tables the backup does not have, left as they were (PostgreSQL), and what was
    carried over."""
    from .extensions import db

    with service_lock.exclusive(app):
        carry = read_carry_over()
        extra = _restore_content(app, path)
        if carry.unreadable:
            return extra, "nothing carried over (the database held nothing readable before)"
        db.engine.dispose()  # the pool's connections predate the restore
        try:
            return extra, apply_carry_over(carry)
        except AuditNotCarried as exc:
            saved = _save_carry_over(app, carry)
            raise BackupError(
                f"restored {path.name} and re-applied {exc.done}, but the audit entries written since the "
                f"backup could not be put back ({exc.why}: the backup's schema is older?); they are saved in {saved}"
            ) from None
        except SQLAlchemyError as exc:
            db.session.rollback()
            saved = _save_carry_over(app, carry)
            raise BackupError(
                f"restored {path.name}, but what happened since the backup could not be re-applied "
                f"({type(exc).__name__}: the backup's schema is older?): keys revoked and users disabled since "
                f"are active again. They are listed in {saved}: run `flask --app wsgi db upgrade`, then revoke "
                "and disable them again (`api-keys revoke PREFIX`, `users disable EMAIL`)"
            ) from None


def _restore_content(app: Flask, path: Path) -> list[str]:
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if database_kind(uri) == "sqlite":
        target = service_lock._sqlite_path(uri)
        assert target is not None
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _private_file(target)
        src = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        dst = sqlite3.connect(target, timeout=float(app.config["SQLITE_BUSY_TIMEOUT_MS"]) / 1000)
        try:
            if src.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError(f"{path} is not a sound SQLite database (quick_check failed)")
            src.backup(dst)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} could not be restored ({exc}); nothing was changed") from None
        finally:
            dst.close()
            src.close()
        return []
    conninfo, env = _libpq(uri)
    # A session holding a table (a psql left in a transaction) fails the restore, all of it
    # undone, instead of leaving it waiting unseen.
    timeout_ms = int(app.config["POSTGRES_LOCK_TIMEOUT_MS"])
    env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={timeout_ms}".strip()
    restore_tool = _pg_tool("pg_restore")
    listing = subprocess.run(
        [restore_tool, "--list", str(path)], env=env, capture_output=True, stdin=subprocess.DEVNULL, text=True
    )
    in_backup = set(re.findall(r"^\d+; \d+ \d+ TABLE (\S+) (\S+) ", listing.stdout, re.MULTILINE))
    _run(
        [
            restore_tool,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            f"--dbname={conninfo}",
            str(path),
        ],
        env,
    )
    from sqlalchemy import inspect

    from .extensions import db

    schema = inspect(db.engine).default_schema_name
    now = set(inspect(db.engine).get_table_names())
    return sorted(t for t in now if (schema, t) not in in_backup)


def _revision_note(app: Flask) -> str:
    """Where the restored database stands against the code's migrations, in words."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from .extensions import db

    script = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config())
    db.engine.dispose()  # the pool's connections predate the restore
    with db.engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    heads = set(script.get_heads())
    if current == heads:
        return f"its migrations are at head ({', '.join(sorted(heads))})"
    return (
        f"its migrations are at {', '.join(sorted(current)) or 'none'}, the code's at {', '.join(sorted(heads))}: "
        "run `flask --app wsgi db upgrade` before starting the service (or deploy the code it was taken with)"
    )


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)


@click.command("backup")
@click.argument("folder", required=False, type=click.Path(file_okay=False, path_type=Path))
@with_appcontext
def backup_command(folder: Path | None) -> None:
    """Back the database up into FOLDER (default: instance/backups/): a timestamped file with its
    SHA-256 beside it; the last BACKUP_KEEP backups there are kept."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    keep = int(app.config["BACKUP_KEEP"])
    if keep < 1:
        raise BackupError(f"BACKUP_KEEP must be 1 or more, not {keep}")
    made = make_backup(app, folder or Path(app.instance_path) / DEFAULT_FOLDER, keep)
    click.echo(f"Backup:  {made.path}")
    click.echo(f"Size:    {_human(made.size)}" + (f" ({made.size} bytes)" if made.size >= 1024 else ""))
    click.echo(f"SHA-256: {made.sha256} (in {checksum_file(made.path).name})")
    kept = len(backups_in(made.path.parent, database_id(app.config["SQLALCHEMY_DATABASE_URI"])))
    click.echo(
        f"Kept:    {kept} of at most {keep}"
        + (f"; removed {', '.join(p.name for p in made.removed)}" if made.removed else "")
    )


@click.command("restore")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def restore_command(path: Path, yes: bool) -> None:
    """Replace the database's content with backup PATH, once its checksum matches. Refused while
    the service (web or scheduler) runs against the database."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    kind = database_kind(uri)
    digest = verify(path, kind)
    check_ours(app, path, kind)
    target = service_lock.describe_database(uri)
    click.echo(f"Backup {path} ({_human(path.stat().st_size)}, sha256 {digest[:16]}...: checksum matches).")
    with audit.cli_action("restore-database", path.name[:255]) as entry:
        if not yes:
            click.confirm(f"Replace every row of {target} with this backup?", abort=True)
        try:
            extra, carried = restore(app, path)
        except service_lock.ServiceRunning as exc:
            raise BackupError(str(exc)) from None
        entry.detail = f"sha256 {digest[:16]}...; carried over: {carried}"
    click.echo(f"Restored {path.name} into {target}; {_revision_note(app)}.")
    click.echo(f"Carried over: {carried}.")
    if extra:
        click.echo(
            f"Left as they were, not in the backup: tables {', '.join(extra)} (made after it was taken?); "
            "drop them if a migration is to create them again.",
            err=True,
        )


def init_app(app: Flask) -> None:
    """`backup` and `restore` join Flask-Migrate's `db` group."""
    group = app.cli.commands["db"]
    assert isinstance(group, click.Group)
    group.add_command(backup_command)
    group.add_command(restore_command)
