"""What each Stripe event changes in our tables.

Handlers get the verified event as a plain dict, run inside the inbox's
transaction (they never commit) and return a Result. They may raise: the inbox
then rolls everything back and answers 500 so that Stripe delivers again.

Ordering: Stripe delivers out of order. Each object's row keeps the last event
applied to it as (created, rank, event id) (kamiyo.models.LastEventMixin): an
event is applied only when its (created, rank) is greater, decided by one read
of the row however long the object's history. Within one second created <
updated < deleted, and a deletion is final. Two events of the same second and
rank that disagree are a tie: the Result asks the inbox to fetch the object
from Stripe after the commit, outside any transaction, and store what Stripe
holds now. Payment outcomes order by time, and a success beats a failure of the
same second.

Ownership: a customer is ours when we already have its Stripe id, or when its
metadata names a `kamiyo_user_id` (set by our API when it creates the customer;
a customer made elsewhere in Stripe has none and is ignored, status `ignored`).
A subscription event for a customer we do not know yet, whose metadata names a
`kamiyo_user_id`, creates that customer's row without an email; the customer's
own event fills it in whichever arrives first. A subscription our API made
names our customer (`kamiyo_customer_id`), which finds its row even after the
Stripe customer was deleted and unlinked.

Our invariant (one live subscription per customer and price) never fails an
event: a second live one that Stripe holds is stored flagged as a duplicate,
and the Result asks the inbox to raise the alert once committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BindParameter, Table, and_, bindparam, exists, func, literal, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db, rowcount
from ..models import (
    LIVE_SUBSCRIPTION_STATUSES,
    Customer,
    DeletedStripeCustomer,
    Subscription,
    live_subscription,
    promote_duplicates,
    stripe_customer_deleted,
)
from ..prepared import Prepared
from ..stripe_objects import price_id as price_of
from ..stripe_objects import reference_id, subscription_period_end
from .models import PaymentOutcome

log = logging.getLogger("kamiyo.webhooks")

PROCESSED = "processed"
IGNORED = "ignored"


@dataclass(frozen=True)
class Refresh:
    """A same-second tie: the object as Stripe holds it now settles it (fetched after the commit)."""

    kind: str  # customer | subscription
    stripe_id: str
    event_at: dt.datetime
    rank: int


@dataclass(frozen=True)
class DuplicateFound:
    """A second live subscription for one customer and price, stored flagged: alert once committed."""

    stripe_id: str
    duplicate_of: str
    customer_id: int
    price_id: str


@dataclass(frozen=True)
class CustomerLinked:
    """A Stripe customer of ours is linked by its webhook: subscriptions of it whose events came
    first (and were ignored, its customer unknown then) are fetched and stored after the commit."""

    stripe_customer_id: str


FollowUp = Refresh | DuplicateFound | CustomerLinked


@dataclass(frozen=True)
class Result:
    status: str  # processed | ignored
    note: str
    follow_up: FollowUp | None = None


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


def dispatch(event: dict[str, Any]) -> Result:
    handler = HANDLERS.get(event["type"])
    if handler is None:
        return Result(IGNORED, "event type not handled")
    return handler(event)


# --------------------------------------------------------------------------- helpers


def event_time(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromtimestamp(event["created"], tz=dt.UTC)


def rank(event_type: str) -> int:
    action = event_type.rsplit(".", 1)[-1]
    return {"created": 0, "deleted": 2}.get(action, 1)


NEWER, OLDER, SAME, TIE = "newer", "older", "same", "tie"


def compare(row: Any, event: dict[str, Any]) -> str:
    """Where this event stands against the last one applied to the row."""
    if row.last_event_at is None:
        return NEWER
    mine, theirs = (event_time(event), rank(event["type"])), (row.last_event_at, row.last_event_rank or 0)
    if mine != theirs:
        return NEWER if mine > theirs else OLDER
    return SAME if row.last_event_id == event["id"] else TIE


def _applied(event: dict[str, Any]) -> dict[str, Any]:
    return {"last_event_at": event_time(event), "last_event_rank": rank(event["type"]), "last_event_id": event["id"]}


# Key space of the advisory locks below (two-key form: this number, then the object's hash).
_ORDER_LOCKS = 0x6B6D


def _take_turns(object_id: str) -> None:
    """PostgreSQL: another worker may be applying an event about this object right now,
    unseen (uncommitted) by our checks; its write would then land after ours whatever their
    order. Events about one object take turns until commit. (SQLite: the write gate already
    admits one transaction at a time.)"""
    if db.session.connection().dialect.name == "postgresql":
        db.session.execute(select(func.pg_advisory_xact_lock(_ORDER_LOCKS, func.hashtext(object_id))))


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
    return stripe_customer_deleted(stripe_customer_id)


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
        customer.last_event_at = customer.last_event_rank = customer.last_event_id = None
        return customer
    # A second Stripe customer for one user: leave our row alone, tell a person.
    log.warning(
        "stripe customer %s names user %s, already linked to %s",
        stripe_customer_id,
        user_id,
        customer.stripe_customer_id,
    )
    return None


# --------------------------------------------------------------------------- customers


@handles("customer.created", "customer.updated", "customer.deleted")
def customer_event(event: dict[str, Any]) -> Result:
    obj = event["data"]["object"]
    stripe_id = obj["id"]
    if _deleted_in_stripe(stripe_id):
        return Result(PROCESSED, "customer deleted on Stripe before: final")
    customer = _customer_by_stripe_id(stripe_id)
    verdict = compare(customer, event) if customer is not None else NEWER
    if verdict == OLDER:
        return Result(PROCESSED, "superseded by a newer event")
    if event["type"] == "customer.deleted":
        return _delete_customer(event, customer)
    linked = None
    if customer is None:
        customer = _claim_customer(stripe_id, _metadata(obj, "kamiyo_user_id"))
        if customer is None:
            return Result(IGNORED, "customer not created by Kamiyo")
        linked = CustomerLinked(stripe_id)
    wanted = _customer_fields(obj)
    if verdict == TIE and any(getattr(customer, name) != value for name, value in wanted.items()):
        return Result(
            PROCESSED,
            "same-second tie: settled from Stripe",
            Refresh("customer", stripe_id, event_time(event), rank(event["type"])),
        )
    for name, value in {**wanted, **_applied(event)}.items():
        setattr(customer, name, value)
    return Result(PROCESSED, f"customer {stripe_id} saved", linked)


def _customer_fields(obj: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "email" in obj:
        fields["email"] = _text(obj["email"] or "", 254)
    if "name" in obj:
        fields["name"] = _text(obj["name"] or "", 256) or None
    return fields


def _delete_customer(event: dict[str, Any], customer: Customer | None) -> Result:
    """Stripe cancels a deleted customer's subscriptions at once: so do we. The deletion is
    kept for good, so that no older event links the customer again."""
    stripe_id = event["data"]["object"]["id"]
    db.session.add(DeletedStripeCustomer(stripe_customer_id=stripe_id, deleted_at=event_time(event)))
    if customer is None:
        return Result(PROCESSED, "deleted customer was not linked")
    cancelled = rowcount(
        db.session.execute(
            update(Subscription)
            .where(Subscription.customer_id == customer.id, Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES))
            .values(status="canceled")
            .execution_options(synchronize_session="fetch")
        )
    )
    # Unlinked, so that the next create makes a new Stripe customer; history stays.
    customer.stripe_customer_id = None
    customer.last_event_at = customer.last_event_rank = customer.last_event_id = None
    return Result(PROCESSED, f"customer {customer.id} unlinked, {cancelled} subscriptions canceled")


# --------------------------------------------------------------------------- subscriptions

_subs = cast(Table, Subscription.__table__)
_other = _subs.alias("other")
# As literal SQL: the compiled-once statements (kamiyo/prepared.py) bind no expanding IN lists.
_OTHER_LIVE = text(
    "other.status IN ({}) AND other.duplicate_of IS NULL".format(
        ", ".join(f"'{status}'" for status in LIVE_SUBSCRIPTION_STATUSES)
    )
)


def _subscription_update(action: str):
    """UPDATE of a subscription row, only if this event is newer than the row's last one, and
    only if it would not make a second live subscription for the customer and price (that case
    is settled by the handler: stored flagged)."""
    at: BindParameter[Any] = bindparam("event_at")
    rank_: BindParameter[Any] = bindparam("rank")
    event_id: BindParameter[Any] = bindparam("event_id")
    # Typed: inside coalesce() it would be bound untyped, and SQLite would store another text format.
    period_end = bindparam("period_end", type_=_subs.c.current_period_end.type)
    same_tie = and_(_subs.c.last_event_at == at, func.coalesce(_subs.c.last_event_rank, 0) == rank_)
    # A tie that changes nothing is no conflict (events about one object in one second often
    # agree): applied in this one statement, with no read and no fetch from Stripe.
    agrees = and_(
        *(
            func.coalesce(value, column).is_not_distinct_from(column)
            for value, column in (
                (bindparam("status"), _subs.c.status),
                (bindparam("price_id"), _subs.c.price_id),
                (period_end, _subs.c.current_period_end),
            )
        )
    )
    newer = or_(
        _subs.c.last_event_at.is_(None),
        _subs.c.last_event_at < at,
        and_(_subs.c.last_event_at == at, func.coalesce(_subs.c.last_event_rank, 0) < rank_),
        and_(same_tie, or_(_subs.c.last_event_id == event_id, agrees)),
    )
    not_final = true() if action == "deleted" else _subs.c.status != "canceled"
    second_live = exists().where(
        _other.c.customer_id == _subs.c.customer_id,
        _other.c.price_id == func.coalesce(bindparam("price_id"), _subs.c.price_id),
        _OTHER_LIVE,
        _other.c.id != _subs.c.id,
    )
    no_conflict = or_(bindparam("live") == literal(False), _subs.c.duplicate_of.is_not(None), ~second_live)
    return (
        update(_subs)
        .where(_subs.c.stripe_subscription_id == bindparam("stripe_id"), and_(newer, not_final, no_conflict))
        .values(
            status=func.coalesce(bindparam("status"), _subs.c.status),
            price_id=func.coalesce(bindparam("price_id"), _subs.c.price_id),
            tier=func.coalesce(bindparam("tier"), _subs.c.tier),
            current_period_end=func.coalesce(period_end, _subs.c.current_period_end),
            last_event_at=at,
            last_event_rank=rank_,
            last_event_id=event_id,
        )
    )


_SUBSCRIPTION_UPDATES = {action: Prepared(_subscription_update(action)) for action in ("created", "updated", "deleted")}


def _subscription_values(event: dict[str, Any]) -> dict[str, Any]:
    obj = event["data"]["object"]
    action = event["type"].rsplit(".", 1)[-1]
    price = price_of(obj)
    status = obj.get("status") or ("canceled" if action == "deleted" else None)
    return {
        "stripe_id": obj["id"],
        "status": str(status)[:32] if status else None,
        "price_id": price[:255] if price else None,
        # Our API tags subscriptions with kamiyo_tier; a price's own tier metadata is the fallback.
        "tier": _metadata(obj, "kamiyo_tier", 64) or _metadata(obj, "tier", 64) or _price_tier(obj),
        "period_end": subscription_period_end(obj),
        "event_at": event_time(event),
        "rank": rank(event["type"]),
        "event_id": event["id"],
        # Could this event make the row live (a status that is live, or kept as it is)?
        "live": status is None or status in LIVE_SUBSCRIPTION_STATUSES,
    }


def _price_tier(obj: dict[str, Any]) -> str | None:
    from ..stripe_objects import first_item

    item = first_item(obj)
    for candidate in (item.get("price"), item.get("plan"), obj.get("plan")):
        if isinstance(candidate, dict) and candidate.get("id"):
            return _metadata(candidate, "tier", 64)
    return None


@handles("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
def subscription_event(event: dict[str, Any]) -> Result:
    values = _subscription_values(event)
    action = event["type"].rsplit(".", 1)[-1]
    if _SUBSCRIPTION_UPDATES[action].execute(db.session.connection(), values):
        if values["status"] is not None and values["status"] not in LIVE_SUBSCRIPTION_STATUSES:
            _handed_on(values["stripe_id"])
        return Result(PROCESSED, f"subscription {values['stripe_id']} is {values['status'] or 'unchanged'}")
    row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == values["stripe_id"]))
    if row is None:
        return _first_news(event, values)
    verdict = compare(row, event)
    if verdict == OLDER or (row.status == "canceled" and action != "deleted"):
        return Result(PROCESSED, "superseded by a newer event")
    if verdict == TIE:
        if _differs(row, values):
            return Result(
                PROCESSED,
                "same-second tie: settled from Stripe",
                Refresh("subscription", row.stripe_subscription_id or "", values["event_at"], values["rank"]),
            )
        return Result(PROCESSED, "same-second tie: nothing differs")
    return _apply_as_duplicate(row, values)


def _handed_on(stripe_id: str) -> None:
    """A subscription left its live state: a flagged duplicate of it now holds the pair."""
    row_id = db.session.scalar(select(Subscription.id).where(Subscription.stripe_subscription_id == stripe_id))
    if row_id is not None:
        promote_duplicates(row_id)


def _differs(row: Subscription, values: dict[str, Any]) -> bool:
    return any(
        values[key] is not None and getattr(row, column) != values[key]
        for key, column in (("status", "status"), ("price_id", "price_id"), ("period_end", "current_period_end"))
    )


def _apply_as_duplicate(row: Subscription, values: dict[str, Any]) -> Result:
    """Newer, but it would make a second live subscription for the customer and price."""
    other = live_subscription(row.customer_id, values["price_id"] or row.price_id, excluding=row.id)
    for column, key in (
        ("status", "status"),
        ("price_id", "price_id"),
        ("tier", "tier"),
        ("current_period_end", "period_end"),
    ):
        if values[key] is not None:
            setattr(row, column, values[key])
    row.last_event_at, row.last_event_rank, row.last_event_id = values["event_at"], values["rank"], values["event_id"]
    row.duplicate_of = other.id if other is not None else None
    return _stored(row, other)


def _stored(row: Subscription, other: Subscription | None) -> Result:
    note = f"subscription {row.stripe_subscription_id} is {row.status}"
    if other is None:
        return Result(PROCESSED, note)
    # A row just added has no customer_id until the flush; `other` is of the same customer, stored.
    log.critical(
        "subscription %s duplicates %s (customer %s, price %s): stored flagged",
        row.stripe_subscription_id,
        other.stripe_subscription_id,
        other.customer_id,
        row.price_id,
    )
    return Result(
        PROCESSED,
        note + ", flagged as a duplicate",
        DuplicateFound(
            row.stripe_subscription_id or "", other.stripe_subscription_id or "", other.customer_id, row.price_id
        ),
    )


def _subscription_customer(obj: dict[str, Any]) -> tuple[Customer | None, bool]:
    """Our customer for a subscription we have no row for, and whether Stripe deleted it."""
    stripe_customer = reference_id(obj.get("customer"))
    if not stripe_customer:
        return None, False
    deleted = _deleted_in_stripe(stripe_customer)
    customer = _customer_by_stripe_id(stripe_customer)
    ours = _metadata(obj, "kamiyo_customer_id", 12)
    if customer is None and ours and ours.isdigit() and deleted:
        # Made by our API for a customer deleted since: still that customer's (canceled) subscription.
        customer = db.session.get(Customer, int(ours))
    if customer is None and not deleted:
        customer = _claim_customer(stripe_customer, _metadata(obj, "kamiyo_user_id"))
    return customer, deleted


def _first_news(event: dict[str, Any], values: dict[str, Any]) -> Result:
    """First news of this subscription (made elsewhere, or before our API stored its id)."""
    customer, deleted = _subscription_customer(event["data"]["object"])
    if customer is None:
        return Result(IGNORED, "subscription of a customer Kamiyo does not hold (made elsewhere, or deleted)")
    # A deleted customer's subscriptions are all canceled on Stripe, whatever this older event says.
    status = "canceled" if deleted else values["status"] or "incomplete"
    price = values["price_id"] or ""
    other = live_subscription(customer.id, price) if status in LIVE_SUBSCRIPTION_STATUSES else None
    row = Subscription(
        customer=customer,
        stripe_subscription_id=values["stripe_id"],
        status=status,
        price_id=price,
        tier=values["tier"] or "unknown",
        current_period_end=values["period_end"],
        last_event_at=values["event_at"],
        last_event_rank=values["rank"],
        last_event_id=values["event_id"],
        duplicate_of=other.id if other is not None else None,
    )
    db.session.add(row)
    return _stored(row, other)


# --------------------------------------------------------------------------- refreshed from Stripe


def store_listed_subscription(obj: dict[str, Any]) -> Result | None:
    """A subscription Stripe listed for a customer we just linked, unknown to us: stored as its
    first news would have been (the caller commits). None when we hold it already."""
    if db.session.scalar(select(Subscription.id).where(Subscription.stripe_subscription_id == obj.get("id"))):
        return None
    values = {
        **_subscription_values(
            {"id": "", "type": "customer.subscription.updated", "created": 0, "data": {"object": obj}}
        ),
        "event_at": None,
        "rank": None,
        "event_id": None,
    }  # no event: any event about it is newer
    return _first_news({"data": {"object": obj}}, values)


def apply_refreshed(refresh: Refresh, obj: dict[str, Any]) -> Result:
    """Store the object as Stripe holds it now, if no newer event was applied since the tie
    (the caller commits)."""
    moved_on = Result(PROCESSED, "left alone: moved on since the tie")
    if refresh.kind == "customer":
        row = _customer_by_stripe_id(refresh.stripe_id)
        if (
            row is None
            or obj.get("deleted")
            or (row.last_event_at, row.last_event_rank) != (refresh.event_at, refresh.rank)
        ):
            return moved_on
        for name, value in _customer_fields(obj).items():
            setattr(row, name, value)
        return Result(PROCESSED, f"customer {refresh.stripe_id} settled from Stripe")
    sub = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == refresh.stripe_id))
    if (
        sub is None
        or sub.status == "canceled"
        or (sub.last_event_at, sub.last_event_rank) != (refresh.event_at, refresh.rank)
    ):
        return moved_on
    status = str(obj.get("status") or sub.status)[:32]
    price = (price_of(obj) or sub.price_id)[:255]
    other = None
    if status in LIVE_SUBSCRIPTION_STATUSES and sub.duplicate_of is None:  # looked up before the sub changes
        other = live_subscription(sub.customer_id, price, excluding=sub.id)
        other = other if other is not None and other.duplicate_of is None else None
        sub.duplicate_of = other.id if other is not None else None  # a second live one: flagged, not refused
    sub.status, sub.price_id = status, price
    if status not in LIVE_SUBSCRIPTION_STATUSES:
        db.session.flush()
        promote_duplicates(sub.id)
    sub.tier = _metadata(obj, "kamiyo_tier", 64) or _metadata(obj, "tier", 64) or _price_tier(obj) or sub.tier
    sub.current_period_end = subscription_period_end(obj) or sub.current_period_end
    return _stored(sub, other)


# --------------------------------------------------------------------------- payments

_outcomes = cast(Table, PaymentOutcome.__table__)
_OUTCOME_COLUMNS = (
    "stripe_object_id",
    "stripe_customer_id",
    "amount",
    "currency",
    "outcome",
    "failure_code",
    "occurred_at",
    "last_event_id",
)


def _outcome_upsert(dialect):
    """INSERT, or UPDATE when this event is newer than the stored outcome: one statement.
    Within one second a success wins: a payment that succeeded does not fail after."""
    statement = dialect.insert(_outcomes)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_outcomes.c.stripe_object_id],
        set_={name: new[name] for name in _OUTCOME_COLUMNS[1:]},
        where=or_(
            _outcomes.c.occurred_at < new.occurred_at,
            and_(
                _outcomes.c.occurred_at == new.occurred_at,
                or_(_outcomes.c.outcome == "failed", new.outcome == "succeeded"),
            ),
        ),
    )


# The two databases the service runs on; both have INSERT ... ON CONFLICT.
_OUTCOME_UPSERTS = {
    name: Prepared(_outcome_upsert(dialect), column_keys=_OUTCOME_COLUMNS)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


def _record_outcome(event: dict[str, Any], payment_id: str, succeeded: bool, amount: Any, failure_code: Any) -> Result:
    obj = event["data"]["object"]
    outcome = "succeeded" if succeeded else "failed"
    connection = db.session.connection()
    changed = _OUTCOME_UPSERTS[connection.dialect.name].execute(
        connection,
        {
            "stripe_object_id": payment_id,
            "stripe_customer_id": reference_id(obj.get("customer")),
            "amount": amount if isinstance(amount, int) else None,
            "currency": (obj.get("currency") or None) and str(obj["currency"])[:3],
            "outcome": outcome,
            "failure_code": None if succeeded else (str(failure_code)[:64] if failure_code else None),
            "occurred_at": event_time(event),
            "last_event_id": event["id"],
        },
    )
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
    payment_id = reference_id(obj["payment_intent"]) or obj["id"]
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
