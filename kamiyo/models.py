"""The core tables. Later features add their own models and migrations."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, TypeDecorator, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, also on SQLite (which stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class Customer(TimestampMixin, db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One customer per platform user: the database is the durable duplicate guard.
    user_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    name: Mapped[Optional[str]] = mapped_column(String(256))
    stripe_customer_id: Mapped[Optional[str]] = mapped_column(String(255), unique=True)

    subscriptions: Mapped[list["Subscription"]] = relationship(back_populates="customer")


# Statuses in which a subscription still holds its customer and price: at most
# one such subscription per customer and price (the database enforces it).
LIVE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete")
_LIVE = text("status IN ('active', 'trialing', 'past_due', 'unpaid', 'incomplete')")


class Subscription(TimestampMixin, db.Model):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("uq_subscriptions_live_customer_price", "customer_id", "price_id", unique=True,
              sqlite_where=_LIVE, postgresql_where=_LIVE),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), nullable=False, index=True)
    price_id: Mapped[str] = mapped_column(String(255), nullable=False)
    tier: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="incomplete")
    stripe_subscription_id: Mapped[Optional[str]] = mapped_column(String(255), unique=True)
    current_period_end: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime())
    # The newest Stripe event applied to this row (out-of-order webhook guard).
    last_event_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime())

    customer: Mapped[Customer] = relationship(back_populates="subscriptions")


class ApiKey(db.Model):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    # SHA-256 of the key: keys are 256-bit random, so a fast hash is enough and
    # the lookup is a single indexed equality.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime())
    revoked_at: Mapped[Optional[dt.datetime]] = mapped_column(UTCDateTime())

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class DashboardUser(db.Model):
    __tablename__ = "dashboard_users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="viewer")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class AlertSent(db.Model):
    """One row per alert key and hour: the cross-process alert de-duplication."""

    __tablename__ = "alerts_sent"
    __table_args__ = (UniqueConstraint("dedup_key", "period"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(255), nullable=False)
    period: Mapped[str] = mapped_column(String(16), nullable=False)  # UTC hour, e.g. 2026-11-22T09
    sent_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
