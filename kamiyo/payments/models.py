"""Tables of the payments feature: claimed operations and client idempotency keys."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from ..models import TimestampMixin, UTCDateTime, utcnow


class PaymentOperation(TimestampMixin, Model):
    """A Stripe-side effect we intend to cause, claimed *before* Stripe is called.

    `scope` is unique (e.g. `customer.create:<user_id>`), so N concurrent
    identical requests produce one row and one Stripe call. The Stripe
    idempotency key is derived from this row (its stored params and
    `generation`), so it is the same on every retry and after a restart.

    The operation runs as phases (kamiyo/payments/phases.py), each ending in a
    `recovery_point` from which a resumed request goes on. `owner_token` fences
    it: every write after the claim is conditional on the token and the
    generation, so a worker that lost its lease changes nothing.
    """

    __tablename__ = "payment_operations"
    __table_args__ = (
        Index("ix_payment_operations_owner_token", "owner_token"),
        # The dashboard's counts: in flight and failed (few), succeeded in a time range.
        Index("ix_payment_operations_status_updated_at", "status", "updated_at"),
        Index(
            "ix_payment_operations_superseded",
            "generation",
            sqlite_where=text("generation > 0"),
            postgresql_where=text("generation > 0"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    operation: Mapped[str] = mapped_column(String(64), nullable=False)
    scope: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    user_id: Mapped[str] = mapped_column(String(128), nullable=False)
    params_json: Mapped[str] = mapped_column(Text, nullable=False)  # canonical JSON of what we send
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # pending: claimed, the Stripe call may be under way (until lease_expires_at);
    # succeeded: result_id holds our row; failed: a permanent (4xx) failure.
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    result_id: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    recovery_point: Mapped[str] = mapped_column(String(32), nullable=False, default="claimed")
    # When the recovery point was reached (a create sent long ago may be past Stripe's key memory).
    recovery_point_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    owner_token: Mapped[str | None] = mapped_column(String(32))
    # The Stripe object this generation made or adopted, once known (phase `created`).
    stripe_object_id: Mapped[str | None] = mapped_column(String(255))


class ClientIdempotencyKey(Model):
    """The caller's `Idempotency-Key` (IETF httpapi draft semantics), per API key."""

    __tablename__ = "client_idempotency_keys"
    __table_args__ = (UniqueConstraint("api_key_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(Integer, nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="in_flight")
    # The request holding the key while in flight: the owner token its operation is claimed
    # with. A retry takes the key over only once that request no longer owns its operation.
    owner_token: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
