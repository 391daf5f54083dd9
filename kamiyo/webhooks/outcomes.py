"""Payment outcomes recorded from webhooks, for the dashboard and the ops API."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select

from ..extensions import db
from .models import PaymentOutcome


def payment_success_rate(since: dt.datetime) -> float | None:
    """Share of payments since `since` whose latest outcome is a success; None without payments.

    A payment that failed and then succeeded on a retry counts once, as a success.
    """
    total, succeeded = db.session.execute(
        select(
            func.count(PaymentOutcome.id),
            func.coalesce(func.sum(case((PaymentOutcome.outcome == "succeeded", 1), else_=0)), 0),
        ).where(PaymentOutcome.occurred_at >= since)
    ).one()
    return succeeded / total if total else None
