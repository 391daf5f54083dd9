"""Reads of payment operations, duplicate flags and the reconcile report, for the dashboard
and the ops API alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select

from ..extensions import db
from ..listing import Page, paginate, text_filter
from ..models import Subscription
from ..observability.counters import counter_total
from ..scheduler.models import JobRun
from .models import PaymentOperation

RECONCILE_JOB = "payments-reconcile"
# in flight: claimed, not finished; superseded: a later generation (a new Stripe key) took over.
STATES = ("in_flight", "failed", "superseded", "succeeded")


def operations(args: Mapping[str, str]) -> Page:
    state = text_filter(args, "state", STATES) or "in_flight"
    operation = text_filter(args, "operation")
    query = select(PaymentOperation)
    if state == "in_flight":
        query = query.where(PaymentOperation.status == "pending")
    elif state == "superseded":
        query = query.where(PaymentOperation.generation > 0)
    else:
        query = query.where(PaymentOperation.status == state)
    if operation:
        query = query.where(PaymentOperation.operation == operation)
    page = paginate(query, PaymentOperation.id, args)
    page.filters = {"state": state, **({"operation": operation} if operation else {})}
    return page


def operation_counts() -> dict[str, int]:
    rows = db.session.execute(select(PaymentOperation.status, func.count()).group_by(PaymentOperation.status))
    counts = {"pending": 0, "succeeded": 0, "failed": 0}
    counts.update({status: int(n) for status, n in rows})
    counts["superseded"] = int(db.session.scalar(select(func.count()).where(PaymentOperation.generation > 0)) or 0)
    return counts


def duplicate_flags() -> list[Subscription]:
    """Subscriptions stored flagged: a second live one Stripe holds for a customer and price."""
    return list(
        db.session.scalars(select(Subscription).where(Subscription.duplicate_of.is_not(None)).order_by(Subscription.id))
    )


def duplicate_flag_count() -> int:
    return int(db.session.scalar(select(func.count()).where(Subscription.duplicate_of.is_not(None))) or 0)


def dedup_hits() -> int:
    """Requests answered from an existing operation instead of calling Stripe, since start."""
    return int(counter_total("stripe_idempotency_dedup"))


def last_reconcile() -> dict[str, Any] | None:
    run = db.session.scalar(
        select(JobRun).where(JobRun.job == RECONCILE_JOB, JobRun.finished_at.is_not(None)).order_by(JobRun.id.desc())
    )
    if run is None:
        return None
    return {
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "status": run.status,
        "period": run.period,
        "report": json.loads(run.summary) if run.summary else None,
    }


def serialise_operation(row: PaymentOperation) -> dict[str, Any]:
    return {
        "id": row.id,
        "operation": row.operation,
        "user_id": row.user_id,
        "status": row.status,
        "recovery_point": row.recovery_point,
        "generation": row.generation,
        "attempts": row.attempts,
        "error_code": row.error_code,
        "stripe_object_id": row.stripe_object_id,
        "updated_at": row.updated_at.isoformat(),
    }
