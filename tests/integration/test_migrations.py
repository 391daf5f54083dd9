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


def test_0008_carries_the_inbox_history_onto_rows_and_flags_what_the_new_index_refuses(make_app,
                                                                                      empty_database_uri):
    """Data made by the code before 0008: the order and deletions the inbox knew move onto rows
    (SQLite hands timestamps back as text), a paused subscription beside a live one of the same
    customer and price is flagged, and a pending create is resumed by replaying it."""
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_uri)
    t1, t2 = "2026-11-01 10:00:00", "2026-11-02 10:00:00"
    with app.app_context():
        upgrade(revision="0007_customer_event_index")
        with db.engine.begin() as connection:
            run = connection.exec_driver_sql
            run("INSERT INTO customers (id, user_id, email, stripe_customer_id, created_at, updated_at) VALUES "
                f"(1, 'u1', 'a@example.com', 'cus_a', '{t1}', '{t1}'), (2, 'u2', 'b@example.com', NULL, '{t1}', '{t1}')")
            for n, (kind, obj, created) in enumerate([("customer.created", "cus_a", t1), ("customer.updated", "cus_a", t2),
                                                       ("customer.deleted", "cus_b", t2)]):
                run("INSERT INTO webhook_events (event_id, type, livemode, object_id, created, received_at, status, "
                    f"attempts, payload) VALUES ('evt_{n}', '{kind}', false, '{obj}', '{created}', '{t2}', 'processed', "
                    "1, '{}')")
            run("INSERT INTO subscriptions (id, customer_id, price_id, tier, status, stripe_subscription_id, "
                f"created_at, updated_at) VALUES (1, 1, 'p', 'pro', 'active', 'sub_1', '{t1}', '{t1}'), "
                f"(2, 1, 'p', 'pro', 'paused', 'sub_2', '{t1}', '{t1}')")
            run("INSERT INTO payment_operations (operation, scope, user_id, params_json, generation, status, "
                "lease_expires_at, attempts, created_at, updated_at) VALUES ('subscription.create', "
                f"'subscription.create:1:q', 'u1', '{{}}', 0, 'pending', '{t1}', 1, '{t1}', '{t1}')")
        upgrade()
        assert differences(db.engine) == []
        with db.engine.connect() as connection:
            run = connection.exec_driver_sql
            assert run("SELECT stripe_customer_id FROM deleted_stripe_customers").scalars().all() == ["cus_b"]
            assert run("SELECT last_event_rank, last_event_id FROM customers WHERE id = 1").one() == (1, "evt_1")
            assert run("SELECT id, duplicate_of FROM subscriptions ORDER BY id").all() == [(1, None), (2, 1)]
            assert run("SELECT recovery_point FROM payment_operations").scalar() == "create_sent"
        downgrade(revision="0007_customer_event_index")
        with db.engine.connect() as connection:
            # Paused was never live to the old index: both keep their status.
            assert connection.exec_driver_sql("SELECT id, status FROM subscriptions ORDER BY id").all() == [
                (1, "active"), (2, "paused")]
        upgrade()
        assert differences(db.engine) == []


def test_0012_folds_blocked_rows_into_counters_and_spreads_them_back(make_app, empty_database_uri):
    """Rows of the code before 0012, one per blocked request: those that share their time,
    IP, endpoint and agent become one counter; every count by time stays what it was."""
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_uri)
    t1, t2 = "2026-11-01 10:00:00", "2026-11-01 10:00:01"
    with app.app_context():
        upgrade(revision="0011_dashboard_counts")
        with db.engine.begin() as connection:
            for ip, at, agent in [("192.0.2.1", t1, "a")] * 3 + [("192.0.2.1", t2, "a"), ("192.0.2.1", t1, "b"),
                                                                  ("192.0.2.2", t1, "a")]:
                connection.exec_driver_sql(
                    'INSERT INTO rate_limit_violations (client_ip, user_agent, endpoint, "limit", occurred_at) '
                    f"VALUES ('{ip}', '{agent}', '/w', '30 per 1 minute', '{at}')")
        upgrade()
        assert differences(db.engine) == []
        query = ("SELECT client_ip, user_agent, count(*), sum(count) FROM rate_limit_violations "
                 "GROUP BY client_ip, user_agent, occurred_at ORDER BY client_ip, user_agent, occurred_at")
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql(query).all() == [
                ("192.0.2.1", "a", 1, 3), ("192.0.2.1", "a", 1, 1), ("192.0.2.1", "b", 1, 1), ("192.0.2.2", "a", 1, 1)]
            assert connection.exec_driver_sql("SELECT count(*) FROM rate_limit_violations "
                                              "WHERE last_at = occurred_at").scalar() == 4
        downgrade(revision="0011_dashboard_counts")
        with db.engine.connect() as connection:
            assert connection.exec_driver_sql(
                "SELECT client_ip, user_agent, count(*) FROM rate_limit_violations "
                "GROUP BY client_ip, user_agent, occurred_at ORDER BY client_ip, user_agent, occurred_at").all() == [
                ("192.0.2.1", "a", 3), ("192.0.2.1", "a", 1), ("192.0.2.1", "b", 1), ("192.0.2.2", "a", 1)]
        upgrade()
        assert differences(db.engine) == []
