"""The record of every Stripe attempt, written by the gateway."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from ..models import UTCDateTime, utcnow


class StripeCall(Model):
    """One row per attempt at a Stripe request, for the dashboard and alerts."""

    __tablename__ = "stripe_calls"
    __table_args__ = (
        # Covering for the per-minute counts' tail (kamiyo/rollups.py): no row is read.
        Index("ix_stripe_calls_created_at_outcome_attempt", "created_at", "outcome", "attempt"),
        # The dashboard's filters by outcome over a time range.
        Index("ix_stripe_calls_outcome_created_at", "outcome", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    outcome: Mapped[str] = mapped_column(String(16), nullable=False)  # success | error | breaker_open
    error_type: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    stripe_request_id: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[float] = mapped_column(nullable=False, default=0.0)
    request_id: Mapped[str | None] = mapped_column(String(64))  # our (sanitised) correlation id
    idempotency_key_prefix: Mapped[str | None] = mapped_column(String(8))
    stripe_version: Mapped[str | None] = mapped_column(String(64))  # the Stripe-Version Stripe answered with
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
