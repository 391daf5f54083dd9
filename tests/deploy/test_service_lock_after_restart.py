"""Red team: the service lock on PostgreSQL (kamiyo/service_lock.py) when the database restarts.

The web process takes its shared advisory lock once, at start-up, on a connection of its own.
A PostgreSQL restart (or failover, or an idle-session kill) ends that session and with it the
lock; nothing takes it again. An idle web process then has no session at all, and
`db restore` runs under it. Fails on the code as it is."""

from __future__ import annotations

import sqlalchemy as sa

from tests.deploy.test_backup_restore import backup, restore
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
