"""Reads of payment operations, duplicate flags and the reconcile report, for the dashboard
and the ops API alike."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select

from ..extensions import db
from ..listing import MAX_PAGE_SIZE, Page, paginate, text_filter
from ..models import LIVE_SUBSCRIPTION_STATUSES, Customer, Subscription
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


def operation_counts(since: dt.datetime) -> dict[str, int]:
    """Operations that need a look (in flight, failed, superseded: few, through their indexes)
    and those that succeeded since `since` (bounded by time: the table is never purged)."""
    counts = {
        "pending": _count(PaymentOperation.status == "pending"),
        "failed": _count(PaymentOperation.status == "failed"),
        "superseded": _count(PaymentOperation.generation > 0),
        "succeeded": _count(PaymentOperation.status == "succeeded", PaymentOperation.updated_at >= since),
    }
    return counts


def _count(*conditions: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(PaymentOperation).where(*conditions)) or 0)


DUPLICATES_SHOWN = MAX_PAGE_SIZE


def duplicate_flags() -> list[Subscription]:
    """Subscriptions stored flagged (a second live one Stripe holds for a customer and price),
    oldest first, at most DUPLICATES_SHOWN: the count says how many there are."""
    return list(
        db.session.scalars(
            select(Subscription)
            .where(Subscription.duplicate_of.is_not(None))
            .order_by(Subscription.id)
            .limit(DUPLICATES_SHOWN)
        )
    )


def duplicate_flag_count() -> int:
    return int(db.session.scalar(select(func.count()).where(Subscription.duplicate_of.is_not(None))) or 0)


def live_duplicate_count() -> int:
    """Flagged duplicates still live (billing): a cancelled one is resolved."""
    return int(
        db.session.scalar(
            select(func.count()).where(
                Subscription.duplicate_of.is_not(None), Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES)
            )
        )
        or 0
    )


def unlinked_customer_count() -> int:
    """Customers without a Stripe customer: deleted on Stripe (unlinked), or still being created."""
    return int(db.session.scalar(select(func.count()).where(Customer.stripe_customer_id.is_(None))) or 0)


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
        "report": _report(run.summary),
    }


def _report(summary: str | None) -> dict[str, Any] | None:
    """The run's report, or None; a report too long to keep says so (`truncated`)."""
    if not summary:
        return None
    report = json.loads(summary)
    return report if isinstance(report, dict) and "customers" in report else {"truncated": True}


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


# -- the API's listings (Stripe's manner: newest first, `limit`, `starting_after`) ----------

LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 10, 100


@dataclass
class ListPage:
    rows: list[Any]
    has_more: bool


def _stripe_page(query: Select, id_column: Any, limit: int, starting_after: int | None) -> ListPage:
    """Newest first; `starting_after` is the id of the last row of the page before (the row
    need not exist any more). One query of limit + 1 rows through the primary key."""
    if starting_after is not None:
        query = query.where(id_column < starting_after)
    rows = list(db.session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))
    return ListPage(rows[:limit], len(rows) > limit)


def customers_page(
    limit: int,
    starting_after: int | None = None,
    user_id: str | None = None,
    email: str | None = None,
    stripe_customer_id: str | None = None,
) -> ListPage:
    query = select(Customer)
    if user_id is not None:
        query = query.where(Customer.user_id == user_id)
    if email is not None:
        query = query.where(Customer.email == email)
    if stripe_customer_id is not None:
        query = query.where(Customer.stripe_customer_id == stripe_customer_id)
    return _stripe_page(query, Customer.id, limit, starting_after)


def subscriptions_page(
    limit: int, starting_after: int | None = None, customer_id: int | None = None, status: str | None = None
) -> ListPage:
    query = select(Subscription)
    if customer_id is not None:
        query = query.where(Subscription.customer_id == customer_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    return _stripe_page(query, Subscription.id, limit, starting_after)
