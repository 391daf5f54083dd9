"""Our rows against what Stripe holds: adopt what is ours, report what is wrong.

Nothing here cancels or deletes on Stripe: a duplicate is reported with the command
that would cancel it, for a person to run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import LIVE_SUBSCRIPTION_STATUSES, Customer, Subscription, promote_duplicates, stripe_customer_deleted
from ..stripe_gateway.gateway import get_gateway
from ..stripe_objects import price_id as price_of
from ..stripe_objects import subscription_period_end
from . import customers, phases
from .idempotency import owner_token
from .models import PaymentOperation
from .retention import CLEARED_PARAMS
from .subscriptions import alert_duplicate, store

log = logging.getLogger(__name__)
REPORT_ITEMS = 100  # drift items kept in a run's report; the counts cover them all


def reconcile_customers() -> dict[str, int]:
    """Adopt Stripe customers that carry our `kamiyo_user_id` but have no row (created, then
    the worker died, and nobody retried within Stripe's ~24 h key memory)."""
    summary = {"scanned": 0, "ours": 0, "adopted": 0, "already_known": 0, "conflicts": 0, "in_progress": 0}
    known = set(db.session.scalars(select(Customer.stripe_customer_id)))
    for stripe_customer in get_gateway().iter_customers():
        summary["scanned"] += 1
        user_id = (stripe_customer.get("metadata") or {}).get("kamiyo_user_id")
        if not user_id:
            continue
        summary["ours"] += 1
        if stripe_customer["id"] in known:
            summary["already_known"] += 1
            continue
        outcome = _adopt_customer(user_id, stripe_customer)
        summary[outcome] += 1
        if outcome == "adopted":
            known.add(stripe_customer["id"])
    return summary


def _adopt_customer(user_id: str, stripe_customer: dict[str, Any]) -> str:
    row = db.session.scalar(select(Customer).where(Customer.user_id == user_id))
    if stripe_customer_deleted(stripe_customer["id"]) or (row is not None and row.stripe_customer_id):
        # The user already has another customer: a duplicate on Stripe's side, for a person.
        log.warning("reconcile: Stripe customer %s duplicates user %s's customer", stripe_customer["id"], user_id)
        return "conflicts"
    scope = f"{customers.OPERATION}:{user_id}"
    op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == scope))
    resumed_with = None
    if op is not None and op.params_json == CLEARED_PARAMS:
        # A failed operation's parameters are cleared after a while (retention.py). Should this
        # run stop before it finishes, the request that resumes it needs parameters to send:
        # those a create of this Stripe customer would have sent.
        resumed_with = customers.create_params(user_id, stripe_customer.get("email") or "", stripe_customer.get("name"))
    run = phases.take_over_idle(scope, owner_token(), resumed_with) if op is not None else None
    if op is not None and run is None and op.status != "succeeded":
        return "in_progress"  # a request owns it: it finishes the job, with the same key
    try:
        if run is None:
            customers.link(user_id, stripe_customer)
            db.session.commit()
        else:
            run.stripe_object = stripe_customer
            phases.atomic_phase(run, customers.CREATED, stripe_object_id=stripe_customer["id"])
            customers.finish(run)
    except (IntegrityError, phases.Superseded, customers.CustomerGone):
        db.session.rollback()
        return "conflicts"
    return "adopted"


@dataclass
class SubscriptionReport:
    scanned: int = 0
    ours: int = 0
    known: int = 0
    adopted: int = 0
    status_fixed: int = 0
    foreign: list[str] = field(default_factory=list)  # our metadata, a customer we do not hold
    duplicates: list[dict[str, Any]] = field(default_factory=list)


def reconcile_daily() -> dict[str, Any]:
    """The scheduled run: customers, then subscriptions; duplicates were alerted when flagged."""
    customers_summary = reconcile_customers()
    report = reconcile_subscriptions()
    summary = {
        "customers": customers_summary,
        "subscriptions_adopted": report.adopted,
        "status_fixed": report.status_fixed,
        "duplicates": len(report.duplicates),
    }
    log.info("reconcile: %s", summary, extra={"reconcile": summary})
    # The drift itself, for the dashboard's last report (job_runs.summary), not for the log line.
    summary["drift"] = {
        "foreign": report.foreign[:REPORT_ITEMS],
        "duplicates": report.duplicates[:REPORT_ITEMS],
    }
    return summary


def reconcile_subscriptions() -> SubscriptionReport:
    """Every live subscription on Stripe that carries our metadata, against our rows: adopt
    what we lack, take Stripe's status where ours drifted, and flag and report a second live
    subscription for one customer and price (never cancelled here)."""
    report = SubscriptionReport()
    live: dict[tuple[int, str], list[str]] = defaultdict(list)
    for made in get_gateway().iter_subscriptions():
        report.scanned += 1
        customer = _our_customer(made)
        if customer is None:
            db.session.rollback()  # no snapshot held while Stripe sends the next page
            continue
        report.ours += 1
        price = price_of(made) or ""
        try:
            _record(report, customer, made, price)
            db.session.commit()  # one subscription at a time: no write lock held over a Stripe call
        except IntegrityError:  # its webhook stored it meanwhile: known next time
            db.session.rollback()
        if made.get("status") in LIVE_SUBSCRIPTION_STATUSES:
            live[(customer.id, price)].append(made["id"])
    for (customer_id, price), stripe_ids in live.items():
        if len(stripe_ids) > 1:
            report.duplicates.extend(_duplicates(customer_id, price, stripe_ids))
    return report


def _our_customer(made: dict[str, Any]) -> Customer | None:
    """Our customer this subscription belongs to: the one our metadata names, if the
    subscription really is theirs; else the one linked to its Stripe customer (a subscription
    made at Stripe's checkout or dashboard for a customer of ours)."""
    stripe_customer = made.get("customer")
    stripe_customer = str(stripe_customer.get("id") if isinstance(stripe_customer, dict) else stripe_customer)
    ours = str((made.get("metadata") or {}).get("kamiyo_customer_id") or "")
    customer = db.session.get(Customer, int(ours)) if ours.isdigit() and len(ours) < 10 else None
    if customer is not None and (
        stripe_customer == customer.stripe_customer_id or stripe_customer_deleted(stripe_customer)
    ):
        return customer
    return db.session.scalar(select(Customer).where(Customer.stripe_customer_id == stripe_customer))


def _record(report: SubscriptionReport, customer: Customer, made: dict[str, Any], price: str) -> None:
    row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == made["id"]))
    if row is None:
        tier = str((made.get("metadata") or {}).get("kamiyo_tier") or "unknown")[:64]
        row = db.session.get_one(Subscription, store(made, customer.id, price, tier))
        report.adopted += 1
        if row.duplicate_of is not None:
            db.session.commit()
            alert_duplicate(row)
        return
    report.known += 1
    if made.get("status") and row.status != made["status"] and row.status != "canceled":
        # The listing may be older than a webhook applied since: Stripe is asked again, and its
        # answer, newer than any event applied so far, is stored.
        row_id = row.id
        db.session.rollback()
        now = get_gateway().retrieve_subscription(made["id"])
        row = db.session.get_one(Subscription, row_id)
        if row.status != now.get("status") and row.status != "canceled":
            row.status = str(now.get("status"))[:32]
            row.current_period_end = subscription_period_end(now) or row.current_period_end
            report.status_fixed += 1
            if row.status not in LIVE_SUBSCRIPTION_STATUSES:
                db.session.flush()
                promote_duplicates(row.id)


def _duplicates(customer_id: int, price: str, stripe_ids: list[str]) -> list[dict[str, Any]]:
    rows = {
        row.stripe_subscription_id: row
        for row in db.session.scalars(select(Subscription).where(Subscription.stripe_subscription_id.in_(stripe_ids)))
    }
    kept = next(
        (sid for sid in stripe_ids if rows.get(sid) is not None and rows[sid].duplicate_of is None), stripe_ids[0]
    )
    return [
        {
            "customer_id": customer_id,
            "price_id": price,
            "subscription": sid,
            "duplicate_of": kept,
            "command": f"flask --app wsgi payments cancel-subscription {sid}",
        }
        for sid in stripe_ids
        if sid != kept
    ]
