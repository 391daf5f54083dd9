"""What each Stripe event changes in our tables.

Handlers get the verified event as a plain dict, run inside the inbox's
transaction (they never commit) and return a Result. They may raise: the inbox
then rolls everything back and answers 500 so that Stripe delivers again.

Ordering: Stripe delivers out of order. An event is applied only when it is
newer than what the row already reflects: subscriptions by their
`last_event_at`, customers by the newest event applied to them in the inbox,
payment outcomes by their `occurred_at`. Within one second (Stripe's
resolution) created < updated < deleted, and a deletion (a canceled
subscription) is final. The hot paths (subscription updates, payment outcomes)
are single conditional statements, built once.

Ownership: a customer is ours when we already have its Stripe id, or when its
metadata names a `kamiyo_user_id` (set by our API when it creates the customer;
a customer made elsewhere in Stripe has none and is ignored, status `ignored`).
A subscription event for a customer we do not know yet, whose metadata names a
`kamiyo_user_id`, creates that customer's row without an email; the customer's
own event fills it in whichever arrives first.
"""

from __future__ import annotations

import datetime as dt
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import and_, bindparam, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import Customer, Subscription
from ..prepared import Prepared
from ..stripe_objects import first_item, subscription_period_end
from .models import CUSTOMER_EVENTS, PaymentOutcome, WebhookEvent

log = logging.getLogger("kamiyo.webhooks")

PROCESSED = "processed"
IGNORED = "ignored"


@dataclass(frozen=True)
class Result:
    status: str  # processed | ignored
    note: str


Handler = Callable[[dict[str, Any]], Result]
HANDLERS: dict[str, Handler] = {}


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for event_type in event_types:
            HANDLERS[event_type] = handler
        return handler

    return register


def expected_status(event: dict[str, Any]) -> str:
    """The status an event will most likely end with (stored with the claim)."""
    return PROCESSED if event["type"] in HANDLERS else IGNORED


def lock_order(event: dict[str, Any]) -> str:
    """The row an event's handler locks first: what a batch's events are handled in the order of.

    PostgreSQL: two workers' batches that lock the same objects in opposite orders would
    deadlock (detected after a second, both batches then redone one event at a time). In
    one global order they queue instead. A payment's outcome row is keyed by the intent an
    invoice names, so invoice.paid and payment_intent.succeeded sort as one object. (The
    first news of a subscription locks its customer too, second: rare enough to leave to
    PostgreSQL's deadlock detection and the one-by-one redo.)
    """
    obj = event["data"]["object"]
    if event["type"].startswith("invoice."):
        return _id(obj.get("payment_intent")) or str(obj.get("id") or "")
    return str(obj.get("id") or "")


def dispatch(event: dict[str, Any]) -> Result:
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return Result(IGNORED, "event type not handled")
    return handler(event)


# --------------------------------------------------------------------------- helpers

def event_time(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(event["created"], tz=dt.timezone.utc)


def _rank(event_type: str) -> int:
    action = event_type.rsplit(".", 1)[-1]
    return {"created": 0, "deleted": 2}.get(action, 1)


# Events of the batch being written whose rows are claimed but not handled yet:
# their provisional "processed" status must not make an older sibling look superseded.
UNHANDLED_IN_BATCH: ContextVar[frozenset[str]] = ContextVar("unhandled_in_batch", default=frozenset())


# Key space of the advisory locks below (two-key form: this number, then the object's hash).
_ORDER_LOCKS = 0x6B6D


def _take_turns(object_id: str) -> None:
    """PostgreSQL: another worker may be applying an event about this object right now,
    unseen (uncommitted) by our checks; its write would then land after ours whatever their
    order. Events about one object take turns until commit. (SQLite: the write gate already
    admits one transaction at a time.)"""
    if db.session.connection().dialect.name == "postgresql":
        db.session.execute(select(func.pg_advisory_xact_lock(_ORDER_LOCKS, func.hashtext(object_id))))


def superseded(event: dict[str, Any]) -> bool:
    """Was a newer event about the same Stripe customer already applied?"""
    object_id = event["data"]["object"].get("id")
    if not object_id:
        return False
    _take_turns(object_id)
    mine = (event_time(event), _rank(event["type"]))
    applied = db.session.execute(
        select(WebhookEvent.created, WebhookEvent.type).where(
            CUSTOMER_EVENTS,  # as written in the partial index, which the database then uses
            WebhookEvent.object_id == object_id,
            WebhookEvent.status == PROCESSED,
            WebhookEvent.event_id.not_in({event["id"], *UNHANDLED_IN_BATCH.get()}),
        )
    )
    for created, event_type in applied:
        rank = _rank(event_type)
        if (rank == 2 and mine[1] != 2) or (created, rank) > mine:
            return True
    return False


def _id(value: Any) -> str | None:
    """A Stripe reference: either the id itself or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _text(value: Any, limit: int) -> str:
    """Free text as stored: at most `limit` characters (the column's length, which PostgreSQL
    enforces), without NUL (which PostgreSQL cannot store in text; JSON can carry it)."""
    return str(value).replace("\x00", "")[:limit]


def _metadata(obj: dict[str, Any], key: str, limit: int = 128) -> str | None:
    metadata = obj.get("metadata")
    value = metadata.get(key) if isinstance(metadata, dict) else None
    return (_text(value, limit) or None) if value else None


def _customer_by_stripe_id(stripe_customer_id: str | None) -> Customer | None:
    if not stripe_customer_id:
        return None
    return db.session.scalar(select(Customer).where(Customer.stripe_customer_id == stripe_customer_id))


def _deleted_in_stripe(stripe_customer_id: str) -> bool:
    _take_turns(stripe_customer_id)  # a deletion being applied right now counts
    return deletion_applied(stripe_customer_id)


def deletion_applied(stripe_customer_id: str) -> bool:
    """Was this Stripe customer's deletion applied? Stripe never revives a deleted customer."""
    return db.session.scalar(select(WebhookEvent.id).where(
        CUSTOMER_EVENTS, WebhookEvent.object_id == stripe_customer_id,
        WebhookEvent.type == "customer.deleted", WebhookEvent.status == PROCESSED,
        WebhookEvent.event_id.not_in(UNHANDLED_IN_BATCH.get()),  # claimed in this batch, not applied yet
    ).limit(1)) is not None


def _claim_customer(stripe_customer_id: str, user_id: str | None) -> Customer | None:
    """Our row for this Stripe customer, linking or creating it from the user id."""
    customer = _customer_by_stripe_id(stripe_customer_id)
    if customer is not None or not user_id:
        return customer
    if _deleted_in_stripe(stripe_customer_id):
        # An event about it older than its deletion (a subscription's, say) must not link it again.
        return None
    customer = db.session.scalar(select(Customer).where(Customer.user_id == user_id))
    if customer is None:
        customer = Customer(user_id=user_id, email="", stripe_customer_id=stripe_customer_id)
        db.session.add(customer)
        return customer
    if customer.stripe_customer_id is None:
        customer.stripe_customer_id = stripe_customer_id
        return customer
    # A second Stripe customer for one user: leave our row alone, tell a person.
    log.warning("stripe customer %s names user %s, already linked to %s",
                stripe_customer_id, user_id, customer.stripe_customer_id)
    return None


# --------------------------------------------------------------------------- customers

@handles("customer.created", "customer.updated", "customer.deleted")
def customer_event(event: dict[str, Any]) -> Result:
    obj = event["data"]["object"]
    stripe_id = obj["id"]
    if superseded(event):
        return Result(PROCESSED, "superseded by a newer event")
    if event["type"] == "customer.deleted":
        customer = _customer_by_stripe_id(stripe_id)
        if customer is None:
            # Still `processed`: the row marks the deletion as final for later events.
            return Result(PROCESSED, "deleted customer was not linked")
        # Unlinked, so that the next create makes a new Stripe customer; history stays.
        customer.stripe_customer_id = None
        return Result(PROCESSED, f"customer {customer.id} unlinked")
    customer = _claim_customer(stripe_id, _metadata(obj, "kamiyo_user_id"))
    if customer is None:
        return Result(IGNORED, "customer not created by Kamiyo")
    if "email" in obj:
        customer.email = _text(obj["email"] or "", 254)
    if "name" in obj:
        customer.name = _text(obj["name"] or "", 256) or None
    return Result(PROCESSED, f"customer {stripe_id} saved")


# --------------------------------------------------------------------------- subscriptions

def _price(obj: dict[str, Any]) -> dict[str, Any]:
    item = first_item(obj)
    for candidate in (item.get("price"), item.get("plan"), obj.get("plan")):
        if isinstance(candidate, dict) and candidate.get("id"):
            return candidate
    return {}


_subs = Subscription.__table__


def _subscription_update(action: str):
    """UPDATE of a subscription row, only if this event is newer than the row's last one."""
    newer = or_(_subs.c.last_event_at.is_(None), _subs.c.last_event_at < bindparam("event_at"))
    if action != "created":  # created loses a tie within the same second
        newer = or_(newer, _subs.c.last_event_at == bindparam("event_at"))
    not_final = true() if action == "deleted" else _subs.c.status != "canceled"
    return (update(_subs)
            .where(_subs.c.stripe_subscription_id == bindparam("stripe_id"), and_(newer, not_final))
            .values(status=func.coalesce(bindparam("status"), _subs.c.status),
                    price_id=func.coalesce(bindparam("price_id"), _subs.c.price_id),
                    tier=func.coalesce(bindparam("tier"), _subs.c.tier),
                    current_period_end=func.coalesce(bindparam("period_end"), _subs.c.current_period_end),
                    last_event_at=bindparam("event_at")))


_SUBSCRIPTION_UPDATES = {action: Prepared(_subscription_update(action)) for action in ("created", "updated", "deleted")}


@handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
def subscription_event(event: dict[str, Any]) -> Result:
    obj = event["data"]["object"]
    stripe_id = obj["id"]
    action = event["type"].rsplit(".", 1)[-1]
    price = _price(obj)
    status = obj.get("status") or ("canceled" if action == "deleted" else None)
    values = {
        "stripe_id": stripe_id,
        "status": str(status)[:32] if status else None,
        "price_id": str(price["id"])[:255] if price else None,
        # Our API tags subscriptions with kamiyo_tier; a price's own tier metadata is the fallback.
        "tier": _metadata(obj, "kamiyo_tier", 64) or _metadata(obj, "tier", 64) or _metadata(price, "tier", 64),
        "period_end": subscription_period_end(obj),
        "event_at": event_time(event),
    }
    if _SUBSCRIPTION_UPDATES[action].execute(db.session.connection(), values):
        return Result(PROCESSED, f"subscription {stripe_id} is {values['status'] or 'unchanged'}")
    if db.session.scalar(select(Subscription.id).where(Subscription.stripe_subscription_id == stripe_id)):
        return Result(PROCESSED, "superseded by a newer event")
    # First news of this subscription (made elsewhere, or before our API stored its id).
    stripe_customer = _id(obj.get("customer"))
    customer = stripe_customer and _claim_customer(stripe_customer, _metadata(obj, "kamiyo_user_id"))
    if not customer:
        return Result(IGNORED, "subscription of a customer Kamiyo does not hold (made elsewhere, or deleted)")
    db.session.add(Subscription(
        customer=customer, stripe_subscription_id=stripe_id, status=values["status"] or "incomplete",
        price_id=values["price_id"] or "", tier=values["tier"] or "unknown",
        current_period_end=values["period_end"], last_event_at=values["event_at"]))
    return Result(PROCESSED, f"subscription {stripe_id} is {values['status'] or 'incomplete'}")


# --------------------------------------------------------------------------- payments

_outcomes = PaymentOutcome.__table__
_OUTCOME_COLUMNS = ("stripe_object_id", "stripe_customer_id", "amount", "currency", "outcome", "failure_code",
                    "occurred_at")


def _outcome_upsert(dialect):
    """INSERT, or UPDATE when this event is at least as new as the stored outcome: one statement."""
    statement = dialect.insert(_outcomes)
    return statement.on_conflict_do_update(
        index_elements=[_outcomes.c.stripe_object_id],
        set_={name: statement.excluded[name] for name in _OUTCOME_COLUMNS[1:]},
        where=_outcomes.c.occurred_at <= statement.excluded.occurred_at)


# The two databases the service runs on; both have INSERT ... ON CONFLICT.
_OUTCOME_UPSERTS = {name: Prepared(_outcome_upsert(dialect), column_keys=_OUTCOME_COLUMNS)
                    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}


def _record_outcome(event: dict[str, Any], payment_id: str, succeeded: bool, amount: Any,
                    failure_code: Any) -> Result:
    obj = event["data"]["object"]
    outcome = "succeeded" if succeeded else "failed"
    connection = db.session.connection()
    changed = _OUTCOME_UPSERTS[connection.dialect.name].execute(connection, dict(
        stripe_object_id=payment_id,
        stripe_customer_id=_id(obj.get("customer")),
        amount=amount if isinstance(amount, int) else None,
        currency=(obj.get("currency") or None) and str(obj["currency"])[:3],
        outcome=outcome,
        failure_code=None if succeeded else (str(failure_code)[:64] if failure_code else None),
        occurred_at=event_time(event),
    ))
    return Result(PROCESSED, f"payment {payment_id} {outcome}" if changed else "superseded by a newer event")


@handles("invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed")
def invoice_event(event: dict[str, Any]) -> Result:
    obj = event["data"]["object"]
    if not obj.get("amount_due"):
        return Result(PROCESSED, "nothing to charge")
    if "payment_intent" not in obj:
        # API versions from 2025-03-31 (ours among them) dropped the invoice's payment_intent,
        # and the intent names no invoice either: recorded from here too, one payment would
        # count twice. Its payment_intent.* events are its record.
        return Result(PROCESSED, "payment recorded from its payment_intent events")
    succeeded = event["type"] != "invoice.payment_failed"
    # Older versions: one row per payment, the intent's id when the invoice names it, so
    # that invoice.paid and payment_intent.succeeded count once (null: paid without one).
    payment_id = _id(obj["payment_intent"]) or obj["id"]
    amount = obj.get("amount_paid") if succeeded else obj.get("amount_due")
    return _record_outcome(event, payment_id, succeeded, amount, None)


@handles("payment_intent.succeeded", "payment_intent.payment_failed")
def payment_intent_event(event: dict[str, Any]) -> Result:
    obj = event["data"]["object"]
    succeeded = event["type"] == "payment_intent.succeeded"
    error = obj.get("last_payment_error") if isinstance(obj.get("last_payment_error"), dict) else {}
    received = obj.get("amount_received")
    amount = received if succeeded and isinstance(received, int) and received else obj.get("amount")
    return _record_outcome(event, obj["id"], succeeded, amount, error.get("decline_code") or error.get("code"))
