"""The service lock on PostgreSQL (kamiyo/service_lock.py) when the database restarts.

A PostgreSQL restart (or failover, or an idle-session kill) ends every session, and the service's
advisory lock with it. The web process and the scheduler take it again (a watchdog thread); a
restore waits long enough for them to come back and refuses; and a process that comes back to
find a restore under way stops rather than serve a database being replaced."""

from __future__ import annotations

import time

import psycopg
import sqlalchemy as sa

from kamiyo import service_lock
from tests.deploy.test_backup_restore import backup, flask_process, restore, wait_for_line
from tests.support import gunicorn, postgresql_only, wait_until


def _kamiyo_sessions(engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name LIKE 'kamiyo-%'"
                )
            ).scalars()
        )


def _drop_every_session(engine) -> None:
    """What a PostgreSQL restart does to each client: its session ends."""
    with engine.connect() as connection:
        connection.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )


@postgresql_only
def test_restore_is_refused_while_gunicorn_serves_even_after_postgresql_restarted(
    app, database, database_uri, isolated_environment
):
    made = backup(app)
    engine = sa.create_engine(database_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with gunicorn(isolated_environment, database_uri, WEB_CONCURRENCY="1", GUNICORN_THREADS="2"):
            assert any(name.startswith("kamiyo-web") for name in _kamiyo_sessions(engine))
            _drop_every_session(engine)
            wait_until(lambda: not _kamiyo_sessions(engine), timeout=10)
            # The web process is still up and serving (pool_pre_ping replaces its pooled
            # connections at the next request), yet:
            result = restore(app, made, "--yes")
            assert result.exit_code == 1 and "the service is running against" in result.output, (
                "db restore ran while gunicorn served the database (its lock went with the restart):\n"
                + result.output
            )
    finally:
        engine.dispose()


def _lock_holders(engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                sa.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted"
                    " AND a.datname = current_database()"
                ),
                {"key": service_lock.ADVISORY_KEY},
            ).scalars()
        )


@postgresql_only
def test_the_scheduler_takes_its_lock_again_or_stops_when_a_restore_has_it(
    app, database, database_uri, isolated_environment
):
    engine = sa.create_engine(database_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    scheduler = flask_process(database_uri, isolated_environment, "scheduler", "run")
    restorer = None
    try:
        wait_for_line(scheduler, "Scheduler running")
        assert any(name.startswith("kamiyo-scheduler") for name in _lock_holders(engine))

        # A restart: the lock is taken again, on a new session.
        _drop_every_session(engine)
        wait_until(lambda: any(name.startswith("kamiyo-scheduler") for name in _lock_holders(engine)), timeout=15)
        assert scheduler.poll() is None

        # A restart, and a restore takes the lock before the scheduler is back: it stops.
        _drop_every_session(engine)
        restorer = psycopg.connect(database_uri, autocommit=True)
        assert restorer.execute("SELECT pg_try_advisory_lock(%s)", (service_lock.ADVISORY_KEY,)).fetchone()[0]
        started = time.monotonic()
        output, _ = scheduler.communicate(timeout=30)
        assert scheduler.returncode == 1, output
        assert time.monotonic() - started < service_lock.WATCHDOG_SECONDS + service_lock.RETAKE_WAIT_SECONDS + 5
        assert "CRITICAL" in output and "a database restore is running against" in output, output
        assert "Traceback" not in output, output
    finally:
        if scheduler.poll() is None:
            scheduler.terminate()
            scheduler.wait(timeout=30)
        if restorer is not None:
            restorer.close()
        engine.dispose()
