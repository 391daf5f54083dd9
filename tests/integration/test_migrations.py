"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from kamiyo.extensions import db
from tests.support import both_databases, sqlite_only

pytestmark = both_databases


@pytest.fixture
def empty_database_uri(database, request, tmp_path):
    """A database of the test's kind with no tables at all."""
    if database == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    postgres = request.getfixturevalue("postgres")
    name = postgres.create_database(postgres.new_name("empty"))
    yield postgres.url(name)
    postgres.drop_database(name)


def differences(engine) -> list:
    """What `flask db migrate` would generate: the models against the database (types not compared)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        return compare_metadata(context, db.metadata)


def test_each_kind_of_database_is_what_the_app_runs_on(app, database):
    with app.app_context():
        assert db.engine.dialect.name == database
        assert differences(db.engine) == []  # the test databases are fully migrated


def test_upgrade_from_empty_matches_models_and_downgrades(make_app, empty_database_uri):
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_uri)
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert {"customers", "subscriptions", "api_keys", "dashboard_users", "webhook_events"} <= tables
        assert differences(db.engine) == []
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        # Every downgrade removed all its upgrade made: the chain runs again from the start.
        upgrade()
        assert differences(db.engine) == []


def test_flask_db_check_finds_nothing_to_migrate(app):
    result = app.test_cli_runner().invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output


@sqlite_only
def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_commits_that_survive_a_power_loss(app):
    with app.app_context():
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            # FULL (2): the log is synced at every commit. A webhook answered 200 is never
            # sent again by Stripe, so its row must not be lost with the OS.
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
