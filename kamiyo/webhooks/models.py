"""Tables of the webhook intake: the event inbox, blocked requests, payment outcomes."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from ..models import UTCDateTime, utcnow

EVENT_STATUSES = ("processed", "ignored", "failed")


class WebhookEvent(Model):
    """One row per Stripe event id: the de-duplication guard and the replay store.

    A row becomes visible only together with the handler's writes (same
    transaction), or as `failed` when the handler raised.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint("status IN ('processed', 'ignored', 'failed')", name="status"),
        Index("ix_webhook_events_received_at", "received_at"),
        # The dashboard's failed and ignored counts, and its status filter, over a time range.
        Index("ix_webhook_events_status_received_at", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(128), nullable=False)
    api_version: Mapped[str | None] = mapped_column(String(64))
    livemode: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    # The Stripe object the event is about (data.object.id), for the dashboard and replays.
    object_id: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)  # Stripe's event time
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # The verified body without what no handler reads (kamiyo/webhooks/minimise.py).
    payload: Mapped[str] = mapped_column(Text, nullable=False)


class RateLimitViolation(Model):
    """Requests the rate limit blocked: a counter per client IP, endpoint, user agent and minute.

    One row per blocked request made a flood the database's busiest writer; a counter grows
    by an upsert instead. Only the first few user agents of an IP and minute get their own
    row (kamiyo/webhooks/limiting.py), so a client choosing a new one for each request
    cannot make a row per request either. Rows from before the counters keep their exact
    time in `occurred_at` and a count of 1.
    """

    __tablename__ = "rate_limit_violations"
    __table_args__ = (
        Index("ix_rate_limit_violations_client_ip_occurred_at", "client_ip", "occurred_at"),
        UniqueConstraint("occurred_at", "client_ip", "endpoint", "user_agent", name="uq_rate_limit_violations_counter"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_ip: Mapped[str] = mapped_column(String(64), nullable=False)
    user_agent: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    endpoint: Mapped[str] = mapped_column(String(255), nullable=False)
    limit: Mapped[str] = mapped_column(String(64), nullable=False)  # the last one breached
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    last_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())  # the latest of the blocks counted


class PaymentOutcome(Model):
    """The latest known outcome of one payment (payment intent, or invoice without one)."""

    __tablename__ = "payment_outcomes"
    __table_args__ = (CheckConstraint("outcome IN ('succeeded', 'failed')", name="outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    stripe_object_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    amount: Mapped[int | None] = mapped_column(BigInteger)  # in the currency's smallest unit
    currency: Mapped[str | None] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False, index=True)
    # The event the stored outcome came from. Within one second a success beats a failure:
    # a payment intent that succeeded is final.
    last_event_id: Mapped[str | None] = mapped_column(String(255))
