"""History of Stripe API version checks (one row per check)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model
from ..models import UTCDateTime, utcnow


class VersionCheck(Model):
    __tablename__ = "version_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    checked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False, index=True)
    # scheduler | cli | alert-evaluation
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    configured_version: Mapped[str] = mapped_column(String(128), nullable=False)
    library_version: Mapped[str] = mapped_column(String(64), nullable=False)
    version_date: Mapped[dt.date | None] = mapped_column(Date())
    age_days: Mapped[int | None] = mapped_column(Integer())
    # From the age alone, and overall (a mismatch raises it to at least warning).
    age_status: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    message: Mapped[str] = mapped_column(Text(), nullable=False)
    # Whether Stripe itself was asked (the webhook-endpoints list).
    remote: Mapped[bool] = mapped_column(Boolean(), nullable=False, default=False)
    mismatches: Mapped[list[dict[str, Any]]] = mapped_column(JSON(), nullable=False, default=list)
    observed: Mapped[dict[str, Any]] = mapped_column(JSON(), nullable=False, default=dict)
