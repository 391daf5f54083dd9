"""The core tables. Each feature keeps its own models and migrations beside them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import Model, db


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, also on SQLite (which stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


class LastEventMixin:
    """The newest Stripe event applied to this row, as (created, rank, event id).

    Stripe delivers out of order, with one-second timestamps: an event is applied only when
    (created, rank) is greater than the row's, so ordering costs one indexed read of the row
    however long the object's history. Within one second created (0) < updated (1) <
    deleted (2); an equal pair with another event id is a tie, settled by fetching the object.
    """

    last_event_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_event_rank: Mapped[int | None] = mapped_column(SmallInteger)
    last_event_id: Mapped[str | None] = mapped_column(String(255))


class Customer(LastEventMixin, TimestampMixin, Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One customer per platform user: the database is the durable duplicate guard.
    user_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    name: Mapped[str | None] = mapped_column(String(256))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), unique=True)

    subscriptions: Mapped[list[Subscription]] = relationship(back_populates="customer")


class DeletedStripeCustomer(Model):
    """A Stripe customer whose deletion we applied. Stripe never revives one, so an older
    event about it must never link it again: kept for good (a row per deleted customer),
    unlike the webhook inbox, which is purged after 30 days."""

    __tablename__ = "deleted_stripe_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    deleted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)


def stripe_customer_deleted(stripe_customer_id: str) -> bool:
    """Was this Stripe customer's deletion applied here?"""
    return (
        db.session.scalar(
            select(DeletedStripeCustomer.id).where(DeletedStripeCustomer.stripe_customer_id == stripe_customer_id)
        )
        is not None
    )


# Statuses in which a subscription still holds its customer and price: at most
# one such subscription per customer and price (the database enforces it).
# A paused subscription resumes (and bills) by itself: it holds its customer and price too.
LIVE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
# A second live subscription that Stripe holds anyway is stored flagged (duplicate_of) rather
# than refused: refusing it would fail its webhook for Stripe's three days of retries.
LIVE_SUBSCRIPTION = text(
    "status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete', 'paused') AND duplicate_of IS NULL"
)


class Subscription(LastEventMixin, TimestampMixin, Model):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index(
            "uq_subscriptions_live_customer_price",
            "customer_id",
            "price_id",
            unique=True,
            sqlite_where=LIVE_SUBSCRIPTION,
            postgresql_where=LIVE_SUBSCRIPTION,
        ),
        # Flagged duplicates, for the dashboard: few, so a partial index stays small.
        Index(
            "ix_subscriptions_flagged",
            "duplicate_of",
            sqlite_where=text("duplicate_of IS NOT NULL"),
            postgresql_where=text("duplicate_of IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), nullable=False, index=True)
    price_id: Mapped[str] = mapped_column(String(255), nullable=False)
    tier: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="incomplete")
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    current_period_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The live subscription this one duplicates (same customer and price), when Stripe holds both.
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id"))

    customer: Mapped[Customer] = relationship(back_populates="subscriptions")


class ApiKey(Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    # SHA-256 of the key: keys are 256-bit random, so a fast hash is enough and
    # the lookup is a single indexed equality.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Space-separated scopes (kamiyo/scopes.py); NULL is a full key, as every key made before
    # scopes existed, and it gains any scope added later.
    scopes: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class DashboardUser(Model):
    __tablename__ = "dashboard_users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="viewer")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Part of the id a session stores: raising it (logout, disable) ends every session of the
    # user at once, in every browser and worker, with nothing kept server-side per session.
    session_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AuditEntry(Model):
    """One admin or key-management action, on the dashboard or the CLI: who, what, when, and
    how it ended."""

    __tablename__ = "audit_events"
    __table_args__ = (CheckConstraint("outcome IN ('ok', 'failed', 'refused')", name="outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    # The dashboard user's email, or "cli:<OS user>" for a command.
    actor: Mapped[str] = mapped_column(String(254), nullable=False, index=True)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str] = mapped_column(String(255), nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    detail: Mapped[str | None] = mapped_column(String(500))
    client_ip: Mapped[str | None] = mapped_column(String(64))


class AlertSent(Model):
    """One row per alert key and hour: the cross-process alert de-duplication."""

    __tablename__ = "alerts_sent"
    __table_args__ = (UniqueConstraint("dedup_key", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(255), nullable=False)
    period: Mapped[str] = mapped_column(String(16), nullable=False)  # UTC hour, e.g. 2026-11-22T09
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


def live_subscription(customer_id: int, price_id: str, excluding: int | None = None) -> Subscription | None:
    """The subscription that holds this customer and price: the unflagged live one, else a
    flagged one still live after its original ended (it bills all the same)."""
    query = select(Subscription).where(
        Subscription.customer_id == customer_id,
        Subscription.price_id == price_id,
        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES),
    )
    if excluding is not None:
        query = query.where(Subscription.id != excluding)
    return db.session.scalar(query.order_by(Subscription.duplicate_of.is_not(None), Subscription.id).limit(1))


def promote_duplicates(subscription_id: int) -> None:
    """The subscription no longer holds its customer and price (cancelled, say): the oldest
    live one flagged as its duplicate holds them now, and the others duplicate that one
    (no commit). The live index then still names the one that holds them."""
    heir = db.session.scalar(
        select(func.min(Subscription.id)).where(
            Subscription.duplicate_of == subscription_id, Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES)
        )
    )
    if heir is None:
        return
    db.session.execute(
        update(Subscription)
        .where(Subscription.duplicate_of == subscription_id, Subscription.id != heir)
        .values(duplicate_of=heir)
    )
    db.session.execute(update(Subscription).where(Subscription.id == heir).values(duplicate_of=None))
