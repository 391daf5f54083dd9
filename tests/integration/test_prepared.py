"""kamiyo.prepared: the webhook hot path's statements on the DB-API cursor must
store exactly what SQLAlchemy's own execution would, in the caller's transaction."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription
from kamiyo.prepared import Prepared
from kamiyo.webhooks.models import WebhookEvent
from tests.support import postgresql_only, sqlite_only

pytestmark = pytest.mark.both_databases  # the SQLite and the PostgreSQL path of Prepared

UTC = dt.timezone.utc
_events = WebhookEvent.__table__
COLUMNS = ("event_id", "type", "api_version", "livemode", "object_id", "created", "received_at",
           "processed_at", "status", "attempts", "last_error", "payload")
INSERT = Prepared(insert(_events), column_keys=COLUMNS)
STATUS = Prepared(select(_events.c.status).where(_events.c.event_id == bindparam("event_id")))


def _row(event_id: str, **overrides):
    at = dt.datetime(2026, 11, 22, 6, 30, 15, 123456, tzinfo=UTC)
    return {"event_id": event_id, "type": "customer.updated", "api_version": "2026-10-28.endive",
            "livemode": True, "object_id": "cus_1", "created": at, "received_at": at,
            "processed_at": None, "status": "processed", "attempts": 1, "last_error": None,
            "payload": "{}", **overrides}


def test_rows_are_stored_exactly_as_sqlalchemy_stores_them(app):
    with app.app_context():
        connection = db.session.connection()
        connection.execute(insert(_events), _row("evt_core"))
        INSERT.execute(connection, _row("evt_prepared"))
        db.session.commit()
        stored = db.session.execute(text(
            "SELECT event_id, livemode, created, received_at, processed_at FROM webhook_events "
            "ORDER BY event_id")).all()
        assert stored[0][1:] == stored[1][1:]  # the same bytes in the database
        event = db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == "evt_prepared"))
        assert event.livemode is True
        assert event.created == dt.datetime(2026, 11, 22, 6, 30, 15, 123456, tzinfo=UTC)


def test_a_duplicate_raises_sqlalchemys_integrity_error_without_the_parameters(app):
    with app.app_context():
        INSERT.execute(db.session.connection(), _row("evt_once", payload='{"secret": "sk_test_x"}'))
        with pytest.raises(IntegrityError) as raised:
            INSERT.execute(db.session.connection(), _row("evt_once", payload='{"secret": "sk_test_x"}'))
        assert "sk_test_x" not in str(raised.value)
        db.session.rollback()


def test_statements_run_in_the_callers_transaction(app):
    with app.app_context():
        INSERT.execute(db.session.connection(), _row("evt_a"))
        INSERT.execute(db.session.connection(), _row("evt_b"))
        db.session.rollback()
        assert db.session.scalar(select(WebhookEvent.id)) is None


def test_onupdate_defaults_and_literals_are_applied_and_rowcount_returned(app):
    subs = Subscription.__table__
    statement = Prepared(update(subs).where(subs.c.stripe_subscription_id == bindparam("sid"),
                                            subs.c.status != "canceled").values(status=bindparam("new_status")))
    long_ago = dt.datetime(2020, 1, 1, tzinfo=UTC)
    with app.app_context():
        customer = Customer(user_id="u1", email="u1@example.com", stripe_customer_id="cus_1")
        db.session.add_all([
            Subscription(customer=customer, stripe_subscription_id="sub_live", price_id="p", tier="pro",
                         status="active", updated_at=long_ago),
            Subscription(customer=customer, stripe_subscription_id="sub_gone", price_id="p", tier="pro",
                         status="canceled", updated_at=long_ago),
        ])
        db.session.commit()
        connection = db.session.connection()
        assert statement.execute(connection, {"sid": "sub_live", "new_status": "past_due"}) == 1
        assert statement.execute(connection, {"sid": "sub_gone", "new_status": "past_due"}) == 0  # the literal
        db.session.commit()
        gone, live = db.session.scalars(select(Subscription).order_by(Subscription.stripe_subscription_id))
        assert (gone.status, live.status) == ("canceled", "past_due")
        assert live.updated_at > long_ago and gone.updated_at == long_ago  # onupdate=utcnow ran


@sqlite_only
def test_sqlite_reads_see_each_commit_and_hold_no_transaction_open(app):
    with app.app_context():
        assert STATUS.read_one(db.engine, {"event_id": "evt_later"}) is None
        INSERT.execute(db.session.connection(), _row("evt_later"))
        db.session.commit()
        assert STATUS.read_one(db.engine, {"event_id": "evt_later"}) == ("processed",)  # no stale snapshot
        # A reader holding a snapshot would keep a full checkpoint from truncating the WAL (busy = 1).
        with db.engine.connect() as connection:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0
        assert db.engine.pool.checkedout() == 0  # the reader takes no pool slot


@postgresql_only
def test_postgresql_reads_see_each_commit_and_hand_their_connection_back_idle(app):
    with app.app_context():
        assert STATUS.read_one(db.engine, {"event_id": "evt_later"}) is None
        INSERT.execute(db.session.connection(), _row("evt_later"))
        assert STATUS.read_one(db.engine, {"event_id": "evt_later"}) is None  # not committed yet: not seen
        db.session.commit()
        assert STATUS.read_one(db.engine, {"event_id": "evt_later"}) == ("processed",)
        assert db.engine.pool.checkedout() == 0  # back in the pool
        # ... and not left inside a transaction (which would hold its snapshot and locks).
        with db.engine.connect() as connection:
            states = connection.execute(text(
                "SELECT state FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()")).scalars().all()
        assert states and "idle in transaction" not in states, states
