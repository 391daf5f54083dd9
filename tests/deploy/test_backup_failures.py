"""`flask db backup` and `db restore` when things go wrong (kamiyo/backups.py): retention with a
clock that moved or a folder shared by two databases, a temporary file left by a backup that
died, a full disk, a database that never answers, and files that pass their checksum yet are
not sound backups of ours. Each problem was found by probing the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kamiyo.config import DEFAULTS
from tests.support import ROOT, TEST_SECRETS


def backup(app, *args: str):
    return app.test_cli_runner().invoke(args=["db", "backup", *args])


def made_path(result) -> Path:
    line = next(line for line in result.output.splitlines() if line.startswith("Backup:"))
    return Path(line.split(None, 1)[1])


def test_a_backup_stamped_in_the_future_does_not_make_retention_delete_the_new_backup(make_app, tmp_path):
    """The clock was ahead when an earlier backup ran (NTP stepped it back since, or the
    backups came from another host): retention sorts by the name's time, so it removes the
    backup it has just made and reports it as made."""
    app = make_app(BACKUP_KEEP=1)
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o700)
    ahead = folder / "kamiyo-sqlite-20991231T235959-000000Z.sqlite3"
    ahead.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    (folder / (ahead.name + ".sha256")).write_text("0" * 64 + f"  {ahead.name}\n")

    result = backup(app, str(folder))
    assert result.exit_code == 0, result.output
    new = made_path(result)
    assert new.exists(), f"the backup just made was removed by retention: {result.output}"


def test_retention_does_not_remove_the_backups_of_another_database_in_the_same_folder(make_app, tmp_path):
    """Two instances (staging and production, or two tenants) back up into one folder, as
    /var/backups/kamiyo: the file names say only the kind of database, so each backup of one
    prunes the other's."""
    folder = tmp_path / "shared-backups"
    first_db, second_db = tmp_path / "first.db", tmp_path / "second.db"
    import shutil

    template = Path(make_app().config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    shutil.copy(template, first_db)
    shutil.copy(template, second_db)
    first = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{first_db}", BACKUP_KEEP=2)
    second = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{second_db}", BACKUP_KEEP=2)

    result = backup(first, str(folder))
    assert result.exit_code == 0, result.output
    first_backup = made_path(result)
    for _ in range(2):
        result = backup(second, str(folder))
        assert result.exit_code == 0, result.output

    assert first_backup.exists(), (
        f"the only backup of {first_db} was removed by a backup of {second_db}: {sorted(os.listdir(folder))}"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tiny tmpfs to fill the disk")
def test_a_full_disk_says_so_in_one_line_without_a_traceback(database_uri, isolated_environment, tmp_path):
    """`db backup` onto a full file system: the operator at 3 a.m. gets a Python traceback
    (sqlite3.OperationalError / OSError), not the one-line BackupError the command gives
    elsewhere."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
        env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment), DATABASE_URL=database_uri)
        done = subprocess.run(
            [Path(sys.executable).with_name("flask"), "--app", "wsgi", "db", "backup", str(mount)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr[-1500:]
        assert "full" in done.stderr.lower() or "space" in done.stderr.lower(), done.stderr[-1500:]
        assert not list(mount.iterdir()), "a partial file was left behind"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_truncated_sqlite_backup_is_refused_in_one_line_and_changes_nothing(app, tmp_path):
    """A backup cut short in a copy between hosts (scp interrupted), its .sha256 made again for
    the copy as the refusal message itself suggests (`sha256sum FILE > FILE.sha256`)."""
    import hashlib

    import sqlalchemy as sa

    from kamiyo.extensions import db

    made = made_path(backup(app))
    cut = tmp_path / made.name
    cut.write_bytes(made.read_bytes()[: made.stat().st_size // 2])
    (tmp_path / (cut.name + ".sha256")).write_text(f"{hashlib.sha256(cut.read_bytes()).hexdigest()}  {cut.name}\n")
    with app.app_context():
        before = db.session.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar()
        db.session.remove()

    result = app.test_cli_runner().invoke(args=["db", "restore", str(cut), "--yes"])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    with app.app_context():
        assert db.session.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == before


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_a_backup_stopped_by_sigterm_leaves_no_partial_file_behind(app, database, database_uri, tmp_path):
    """systemd stops a backup that outlives its timeout with SIGTERM. Python's default SIGTERM
    ends the process without the `except BaseException` clean-up, and pg_dump (its child)
    writes on into the hidden `.kamiyo-...partial`: a full-size file retention never sees
    (its name is not a backup's), one more at each such stop, until the disk is full."""
    import signal
    import time

    import psycopg

    from tests.deploy.test_backup_restore import service_env

    folder = tmp_path / "backups"
    holder = psycopg.connect(database_uri)
    try:
        holder.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")  # pg_dump waits on it
        env = service_env(database_uri, tmp_path / "instance")
        (tmp_path / "instance").mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [Path(sys.executable).with_name("flask"), "--app", "wsgi", "db", "backup", str(folder)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 30
        while not (folder.exists() and any(p.name.endswith(".partial") for p in folder.iterdir())):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the backup never started"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        holder.rollback()
        holder.close()
    time.sleep(2)  # pg_dump, now unblocked, finishes what it was writing
    left = sorted(p.name for p in folder.iterdir())
    assert not [name for name in left if name.endswith(".partial")], f"left behind: {left}"


def test_a_foreign_sqlite_file_is_refused_as_a_backup_and_changes_nothing(app, tmp_path):
    """Another program's SQLite database (the wrong file picked in /var/backups), with the
    checksum file the refusal message tells how to make: the restore checks the magic bytes
    only, replaces every table of ours with the stranger's, and says "its migrations are at
    none"."""
    import hashlib
    import sqlite3

    import sqlalchemy as sa

    from kamiyo.extensions import db

    foreign = tmp_path / "kamiyo-sqlite-20261201T000000-000000Z.sqlite3"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.execute("INSERT INTO notes (body) VALUES ('not a payments database')")
    con.commit()
    con.close()
    (tmp_path / (foreign.name + ".sha256")).write_text(
        f"{hashlib.sha256(foreign.read_bytes()).hexdigest()}  {foreign.name}\n")

    result = app.test_cli_runner().invoke(args=["db", "restore", str(foreign), "--yes"])
    with app.app_context():
        db.engine.dispose()
        tables = set(sa.inspect(db.engine).get_table_names())
    assert "customers" in tables and "notes" not in tables, (result.output, sorted(tables))
    assert result.exit_code == 1, result.output


def test_a_backup_of_a_postgresql_that_never_answers_gives_up(isolated_environment, tmp_path):
    """pg_dump is run without a connect timeout (no connect_timeout in the conninfo, no
    PGCONNECT_TIMEOUT): against an address that accepts and never answers, the backup (a
    systemd timer, the first step of release.sh) waits for ever."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
        env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment),
                   DATABASE_URL=f"postgresql://kamiyo:s3cretpw@127.0.0.1:{silent.getsockname()[1]}/kamiyo")
        proc = subprocess.Popen(
            [Path(sys.executable).with_name("flask"), "--app", "wsgi", "db", "backup", str(tmp_path / "b")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)  # flask and its pg_dump
            proc.communicate()
            pytest.fail("db backup still waiting after 45 s on a database that never answers")
        assert proc.returncode == 1 and "Traceback" not in err, err[-400:]
        assert "s3cretpw" not in out + err
    finally:
        silent.close()


def test_retention_removes_temporary_files_a_dead_backup_left_an_hour_ago(make_app, tmp_path):
    """A backup killed outright (SIGKILL, a power cut) leaves its `.partial`: the next backup of
    the same database removes it once it is an hour old; a newer one may be a backup running now,
    and another database's are left to that database's own backups."""
    import time

    from kamiyo import backups

    app = make_app(BACKUP_KEEP=2)
    folder = tmp_path / "backups"
    folder.mkdir(mode=0o700)
    ours = backups.database_id(app.config["SQLALCHEMY_DATABASE_URI"])
    other = "0" * 8 if ours != "0" * 8 else "1" * 8
    old = folder / f".kamiyo-sqlite-{ours}-20261201T000000-000000Z.sqlite3.partial"
    running = folder / f".kamiyo-sqlite-{ours}-20261206T000000-000000Z.sqlite3.partial"
    others = folder / f".kamiyo-sqlite-{other}-20261201T000000-000000Z.sqlite3.partial"
    for path in (old, running, others):
        path.write_bytes(b"SQLite format 3\x00")
    # Times on the service's clock (the files' own are the machine's, which a moved test clock is not).
    now = time.time()
    two_hours_ago = now - 7200
    os.utime(running, (now, now))
    for path in (old, others):
        os.utime(path, (two_hours_ago, two_hours_ago))

    result = backup(app, str(folder))
    assert result.exit_code == 0, result.output
    assert not old.exists() and running.exists() and others.exists(), sorted(os.listdir(folder))
    assert made_path(result).name.startswith(f"kamiyo-sqlite-{ours}-")
