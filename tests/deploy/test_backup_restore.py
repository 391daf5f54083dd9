"""`flask db backup` and `flask db restore`: a backup restores every row, on SQLite and PostgreSQL;
a damaged backup is refused; the last BACKUP_KEEP are kept; and no restore runs under the live
service (real gunicorn, real `flask scheduler run`) nor does the service start under a restore."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from kamiyo import service_lock
from kamiyo.config import DEFAULTS
from kamiyo.extensions import db
from tests.integration.test_migration_rollback import seed_every_table, snapshot
from tests.support import ROOT, TEST_SECRETS, both_databases, free_port, gunicorn, postgresql_only, sqlite_only

pytestmark = both_databases


def backup(app, *args: str) -> Path:
    result = app.test_cli_runner().invoke(args=["db", "backup", *args])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("Backup:"))
    return Path(line.split(None, 1)[1])


def restore(app, path: Path, *args: str, **kwargs):
    return app.test_cli_runner().invoke(args=["db", "restore", str(path), *args], **kwargs)


def without_restore_entries(found: dict) -> dict:
    """A snapshot less the restore's own audit entries (a restore, done or refused, is one)."""
    columns, rows = found["audit_events"]
    action = columns.index("action")
    return {**found, "audit_events": (columns, [row for row in rows if row[action] != "restore-database"])}


def change_everything() -> None:
    """After the backup: a row changed, a row deleted, a row added."""
    with db.engine.begin() as connection:
        connection.execute(sa.text("UPDATE customers SET email = 'changed@example.com' WHERE id = 1"))
        connection.execute(sa.text("DELETE FROM audit_events"))
        connection.execute(sa.text("DELETE FROM api_keys WHERE id = 2"))
        connection.execute(
            sa.text("INSERT INTO alerts_sent (dedup_key, period, sent_at) VALUES ('after-the-backup', 'p', :t)"),
            {"t": "2026-12-01 00:00:00"},
        )


def test_backup_then_restore_brings_every_row_back(app, database):
    with app.app_context():
        seed_every_table()
        seeded = snapshot()
    made = backup(app)

    folder = Path(app.instance_path) / "backups"
    assert made.parent == folder and made.name.startswith(f"kamiyo-{database}-")
    # Customers' emails inside: nobody else reads them.
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    digest = hashlib.sha256(made.read_bytes()).hexdigest()
    sums = made.with_name(made.name + ".sha256")
    assert sums.read_text() == f"{digest}  {made.name}\n"  # what `sha256sum -c` reads
    assert stat.S_IMODE(sums.stat().st_mode) == 0o600

    with app.app_context():
        change_everything()
        assert snapshot() != seeded
    result = restore(app, made, "--yes")
    assert result.exit_code == 0, result.output
    assert "checksum matches" in result.output and "at head" in result.output
    with app.app_context():
        after = snapshot()
        assert without_restore_entries(after) == seeded
        assert len(after["audit_events"][1]) == len(seeded["audit_events"][1]) + 1  # the restore's own
        # The restored database takes writes (PostgreSQL: its sequences came back too).
        with db.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO alerts_sent (dedup_key, period, sent_at) VALUES ('after-restore', 'p', :t)"),
                {"t": "2026-12-02 00:00:00"},
            )


@postgresql_only
def test_tables_the_backup_does_not_have_are_named(app, database):
    made = backup(app)
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE made_after_the_backup (id integer)")
    result = restore(app, made, "--yes")
    assert result.exit_code == 0, result.output
    assert "not in the backup: tables made_after_the_backup" in result.output


@sqlite_only
def test_restore_asks_first_and_no_changes_nothing(app, database):
    with app.app_context():
        seed_every_table()
    made = backup(app)
    with app.app_context():
        change_everything()
        changed = snapshot()
    result = restore(app, made, input="n\n")
    assert result.exit_code == 1 and "Replace every row of" in result.output and "Aborted" in result.output
    with app.app_context():
        assert without_restore_entries(snapshot()) == changed


@sqlite_only
def test_a_damaged_backup_is_refused(app, database):
    with app.app_context():
        seed_every_table()
    made = backup(app)
    with app.app_context():
        change_everything()
        changed = snapshot()
    data = bytearray(made.read_bytes())
    data[len(data) // 2] ^= 0xFF
    made.write_bytes(bytes(data))

    result = restore(app, made, "--yes")
    assert result.exit_code == 1
    assert "does not match its checksum" in result.output and "Traceback" not in result.output

    made.with_name(made.name + ".sha256").unlink()
    result = restore(app, made, "--yes")
    assert result.exit_code == 1 and "no checksum beside" in result.output
    with app.app_context():
        assert without_restore_entries(snapshot()) == changed


@sqlite_only
def test_a_backup_of_the_other_kind_of_database_is_refused(app, database, tmp_path):
    dump = tmp_path / "kamiyo-postgresql-20261206T000000-000000Z.dump"
    dump.write_bytes(b"PGDMP" + b"\0" * 100)
    dump.with_name(dump.name + ".sha256").write_text(hashlib.sha256(dump.read_bytes()).hexdigest() + "  x\n")
    result = restore(app, dump, "--yes")
    assert result.exit_code == 1 and "is a postgresql backup, and this database is sqlite" in result.output


@sqlite_only
def test_the_last_backup_keep_backups_are_kept(make_app, database, tmp_path):
    app = make_app(BACKUP_KEEP=2)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a backup")
    made = [backup(app, str(folder)) for _ in range(4)]
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(
        ["notes.txt", *(p.name for p in made[2:]), *(p.name + ".sha256" for p in made[2:])]
    )


@pytest.mark.slow
def test_restore_is_refused_while_gunicorn_serves_the_database(app, database, database_uri, isolated_environment):
    with app.app_context():
        seed_every_table()
        seeded = snapshot()
    made = backup(app)
    with app.app_context():
        change_everything()
        changed = snapshot()

    with gunicorn(isolated_environment, database_uri, WEB_CONCURRENCY="1", GUNICORN_THREADS="2"):
        result = restore(app, made, "--yes")
        assert result.exit_code == 1, result.output
        assert "the service is running against" in result.output
        assert ("gunicorn" if database == "sqlite" else "kamiyo-web") in result.output
        assert "systemctl stop kamiyo-web kamiyo-scheduler" in result.output
        with app.app_context():
            assert without_restore_entries(snapshot()) == changed

    result = restore(app, made, "--yes")  # stopped: now it may
    assert result.exit_code == 0, result.output
    with app.app_context():
        # The refused restore's entry, written after the backup, is carried over.
        assert without_restore_entries(snapshot()) == seeded


def service_env(database_uri: str, instance: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(instance), DATABASE_URL=database_uri, LOG_LEVEL="WARNING")
    return env


def flask_process(database_uri: str, instance: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", *args],
        cwd=ROOT,
        env=service_env(database_uri, instance),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_line(process: subprocess.Popen, text: str, most: int = 50) -> str:
    """The first line of the process's output that holds `text`. Log lines may come first: a
    pinned Stripe version grown old is logged CRITICAL at start-up (as under --travel=730d)."""
    seen = []
    for _ in range(most):
        line = process.stdout.readline()
        seen.append(line)
        if text in line or not line:
            break
    assert text in seen[-1], "".join(seen)
    return seen[-1]


@pytest.mark.slow
def test_the_scheduler_holds_the_database_and_does_not_start_under_a_restore(
    app, database, database_uri, isolated_environment
):
    made = backup(app)
    scheduler = flask_process(database_uri, isolated_environment, "scheduler", "run")
    try:
        wait_for_line(scheduler, "Scheduler running")
        result = restore(app, made, "--yes")
        assert result.exit_code == 1 and "the service is running against" in result.output, result.output
        if database == "postgresql":
            assert "kamiyo-scheduler" in result.output
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)

    with app.app_context(), service_lock.exclusive(app):  # what a restore holds while it runs
        started = flask_process(database_uri, isolated_environment, "scheduler", "run")
        output, _ = started.communicate(timeout=60)
        # A web process (a gunicorn worker imports wsgi.py) stops at start-up the same way.
        web = subprocess.run(
            [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=service_env(database_uri, isolated_environment),
            capture_output=True, text=True, timeout=60,
        )
    assert started.returncode == 1
    assert "a database restore is running against" in output and "Traceback" not in output
    assert web.returncode == 1
    assert "a database restore is running against" in web.stderr and "Traceback" not in web.stderr


def test_nothing_holds_the_database_in_tests_or_one_off_commands(app, database):
    with app.app_context(), service_lock.exclusive(app):
        pass  # a test's app is not the service: it holds nothing


def test_a_web_process_starts_while_postgresql_is_down_and_takes_its_lock_later(isolated_environment):
    """Start-up does not wait for the database: /health says 503 meanwhile."""
    env = service_env(f"postgresql://kamiyo@127.0.0.1:{free_port()}/kamiyo", isolated_environment)
    started = subprocess.run(
        [sys.executable, "-c", "import wsgi; print('started')"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout and "service lock not taken yet" in started.stderr
