"""Use cases: customers and subscriptions. Each function owns its transaction."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

import stripe
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..http_errors import ApiError
from ..models import LIVE_SUBSCRIPTION_STATUSES, Customer, Subscription
from ..stripe_objects import subscription_period_end
from ..webhooks.handlers import deletion_applied
from . import idempotency, metrics
from .errors import CircuitOpenError, is_transient
from .gateway import get_gateway
from .models import PaymentOperation

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class Result(Generic[T]):
    value: T
    created: bool  # False: an existing record was returned (idempotent replay)


def _existing(operation: str, value: T, **fields: Any) -> Result[T]:
    """An idempotent replay: the record we already have, not a new Stripe call."""
    idempotency.log_dedup(operation, **fields)
    metrics.PAYMENT_OPERATIONS.labels(operation=operation, outcome="existing").inc()
    return Result(value, created=False)


def _stripe_step(op: PaymentOperation, operation: str, call):
    """Run one Stripe step of a claimed operation, settling the claim on failure."""
    try:
        return call()
    except stripe.StripeError as exc:
        if is_transient(exc):
            idempotency.release(op)
            metrics.PAYMENT_OPERATIONS.labels(operation=operation, outcome="transient_error").inc()
        else:
            db.session.rollback()
            idempotency.fail_permanently(db.session.get(PaymentOperation, op.id), type(exc).__name__)
            metrics.PAYMENT_OPERATIONS.labels(operation=operation, outcome="failed").inc()
        raise
    except CircuitOpenError:
        idempotency.release(op)
        raise


def _anew_if_gone(op: PaymentOperation, operation: str, made: dict, gone: Callable[[str], bool],
                  create: Callable[[str], dict]) -> dict:
    """A resumed operation's old key may replay an object that is gone since (its webhook
    stored it, then its deletion or cancellation): then the next generation makes a new one."""
    if op.attempts == 1 or not gone(made["id"]):
        return made
    key = idempotency.next_generation(op)
    return _stripe_step(op, operation, lambda: create(key))


def _cancelled(stripe_subscription_id: str) -> bool:
    status = db.session.scalar(select(Subscription.status).where(
        Subscription.stripe_subscription_id == stripe_subscription_id))
    return status is not None and status not in LIVE_SUBSCRIPTION_STATUSES


# -- customers ----------------------------------------------------------------------

def get_customer(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise ApiError(404, "customer_not_found", "No customer with this id.", "Check the customer id.")
    return customer


def _unlinked(op: PaymentOperation) -> bool:
    """The customer this operation made was deleted on Stripe (its row unlinked): make a new one."""
    customer = db.session.get(Customer, op.result_id) if op.result_id else None
    return customer is None or customer.stripe_customer_id is None


def create_customer(user_id: str, email: str, name: str | None) -> Result[Customer]:
    existing = db.session.scalar(select(Customer).where(Customer.user_id == user_id))
    if existing is not None and existing.stripe_customer_id:
        return _existing("customer.create", existing, customer_id=existing.id)

    params: dict[str, Any] = {"email": email, "metadata": {"kamiyo_user_id": user_id}}
    if name:
        params["name"] = name
    claim = idempotency.acquire("customer.create", f"customer.create:{user_id}", user_id, params, reopen=_unlinked)
    if not claim.owned:
        customer = db.session.get(Customer, claim.op.result_id)
        return _existing("customer.create", customer, customer_id=customer.id)

    op = claim.op
    gateway = get_gateway()
    # The stored params, not this request's: a resumed operation must re-send
    # exactly what the first attempt sent, under the same key.
    stored, key = json.loads(op.params_json), idempotency.stripe_key(op)
    db.session.commit()  # no transaction stays open while Stripe answers
    stripe_customer = _stripe_step(op, "customer.create", lambda: gateway.create_customer(stored, key))
    stripe_customer = _anew_if_gone(op, "customer.create", stripe_customer, deletion_applied,
                                    lambda new_key: gateway.create_customer(stored, new_key))
    try:
        customer = _adopt_customer(op, stripe_customer, user_id)
    except IntegrityError:
        # Its customer.created webhook (or `payments reconcile`) stored the row first: use it.
        db.session.rollback()
        customer = db.session.scalar(select(Customer).where(Customer.stripe_customer_id == stripe_customer["id"]))
        if customer is None:
            raise
        log.info("customer %s was stored by its webhook or reconcile first; using it", customer.id)
        idempotency.succeed(db.session.get(PaymentOperation, op.id), customer.id)
        db.session.commit()
    metrics.PAYMENT_OPERATIONS.labels(operation="customer.create", outcome="created").inc()
    log.info("customer created", extra={"customer_id": customer.id, "stripe_customer_id": customer.stripe_customer_id})
    return Result(customer, created=True)


def _adopt_customer(op: PaymentOperation | None, stripe_customer, user_id: str) -> Customer:
    # A user whose Stripe customer was deleted keeps their row: it is linked to the new one.
    customer = db.session.scalar(select(Customer).where(Customer.user_id == user_id,
                                                        Customer.stripe_customer_id.is_(None)))
    if customer is None:
        customer = Customer(user_id=user_id)
        db.session.add(customer)
    customer.email = stripe_customer.get("email") or ""
    customer.name = stripe_customer.get("name")
    customer.stripe_customer_id = stripe_customer["id"]
    db.session.flush()
    if op is not None:
        idempotency.succeed(op, customer.id)
    db.session.commit()
    return customer


def reconcile_customers() -> dict[str, int]:
    """Adopt Stripe customers that carry our `kamiyo_user_id` but have no row
    (e.g. created, then the process died, and nobody retried within Stripe's
    ~24 h key memory)."""
    summary = {"scanned": 0, "ours": 0, "adopted": 0, "already_known": 0, "conflicts": 0}
    known_stripe_ids = set(db.session.scalars(select(Customer.stripe_customer_id)))
    for stripe_customer in get_gateway().iter_customers():
        summary["scanned"] += 1
        metadata = stripe_customer.get("metadata") or {}
        user_id = metadata.get("kamiyo_user_id")
        if not user_id:
            continue
        summary["ours"] += 1
        if stripe_customer["id"] in known_stripe_ids:
            summary["already_known"] += 1
            continue
        if db.session.scalar(select(Customer).where(Customer.user_id == user_id)) is not None:
            # The user already has another customer: a duplicate on Stripe's side to clean up by hand.
            summary["conflicts"] += 1
            log.warning("reconcile: Stripe customer %s duplicates user %s's customer", stripe_customer["id"], user_id)
            continue
        op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == f"customer.create:{user_id}"))
        try:
            _adopt_customer(op, stripe_customer, user_id)
        except IntegrityError:
            db.session.rollback()
            summary["conflicts"] += 1
            continue
        known_stripe_ids.add(stripe_customer["id"])
        summary["adopted"] += 1
    return summary


# -- subscriptions ------------------------------------------------------------------

def get_subscription(subscription_id: int) -> Subscription:
    subscription = db.session.get(Subscription, subscription_id)
    if subscription is None:
        raise ApiError(404, "subscription_not_found", "No subscription with this id.", "Check the subscription id.")
    return subscription


def _live_subscription(customer_id: int, price_id: str) -> Subscription | None:
    return db.session.scalar(select(Subscription).where(
        Subscription.customer_id == customer_id, Subscription.price_id == price_id,
        Subscription.status.in_(LIVE_SUBSCRIPTION_STATUSES)))


def create_subscription(customer_id: int, price_id: str, tier: str,
                        payment_method: str | None) -> Result[Subscription]:
    customer = get_customer(customer_id)
    if not customer.stripe_customer_id:
        raise ApiError(409, "customer_deleted", "This customer was deleted on Stripe.",
                       "Create the customer again (POST /customers with the same user_id), then subscribe.")
    existing = _live_subscription(customer.id, price_id)
    if existing is not None:
        return _existing("subscription.create", existing, subscription_id=existing.id)

    # error_if_incomplete: a declined first payment is a 402 now, not an `incomplete`
    # subscription that would hold this customer and price for Stripe's ~23 h.
    params = {"customer": customer.stripe_customer_id, "items": [{"price": price_id}],
              "payment_behavior": "error_if_incomplete",
              "metadata": {"kamiyo_customer_id": str(customer.id), "kamiyo_tier": tier}}
    scope = f"subscription.create:{customer.id}:{price_id}"

    def no_longer_live(op: PaymentOperation) -> bool:
        sub = db.session.get(Subscription, op.result_id) if op.result_id else None
        return sub is None or sub.status not in LIVE_SUBSCRIPTION_STATUSES

    claim = idempotency.acquire("subscription.create", scope, customer.user_id,
                                {**params, "payment_method": payment_method}, reopen=no_longer_live)
    if not claim.owned:
        subscription = db.session.get(Subscription, claim.op.result_id)
        return _existing("subscription.create", subscription, subscription_id=subscription.id)

    op = claim.op
    gateway = get_gateway()
    stored = json.loads(op.params_json)
    payment_method = stored.pop("payment_method", None)
    key = idempotency.stripe_key(op)
    stripe_customer_id = customer.stripe_customer_id
    db.session.commit()  # no transaction stays open while Stripe answers
    if payment_method:
        # Each step has its own key, derived from the operation's: a resumed
        # operation replays the steps that already happened.
        _stripe_step(op, "subscription.create", lambda: gateway.attach_payment_method(
            payment_method, stripe_customer_id, idempotency.derive_key("pm.attach", key, "", 0)))
        _stripe_step(op, "subscription.create", lambda: gateway.set_default_payment_method(
            stripe_customer_id, payment_method, idempotency.derive_key("pm.default", key, "", 0)))
    else:
        stripe_customer = _stripe_step(op, "subscription.create",
                                       lambda: gateway.retrieve_customer(stripe_customer_id))
        settings = stripe_customer.get("invoice_settings") or {}
        if not settings.get("default_payment_method") and not stripe_customer.get("default_source"):
            db.session.rollback()
            idempotency.fail_permanently(db.session.get(PaymentOperation, op.id), "payment_method_required")
            raise ApiError(402, "payment_method_required", "This customer has no payment method on file.",
                           "Send a payment_method (a PaymentMethod id from the checkout) with the request.")
    stripe_sub = _stripe_step(op, "subscription.create", lambda: gateway.create_subscription(stored, key))
    stripe_sub = _anew_if_gone(op, "subscription.create", stripe_sub, _cancelled,
                               lambda new_key: gateway.create_subscription(stored, new_key))
    subscription = Subscription(customer_id=customer.id, price_id=price_id, tier=tier, status=stripe_sub["status"],
                                stripe_subscription_id=stripe_sub["id"],
                                current_period_end=subscription_period_end(stripe_sub))
    db.session.add(subscription)
    try:
        db.session.flush()
    except IntegrityError:
        # Stripe's customer.subscription.created webhook can arrive before Stripe's
        # answer to us, and its handler stores the row first: complete that row.
        db.session.rollback()
        subscription = db.session.scalar(select(Subscription).where(
            Subscription.stripe_subscription_id == stripe_sub["id"]))
        if subscription is None:
            raise
        subscription.price_id, subscription.tier = price_id, tier
        op = db.session.get(PaymentOperation, op.id)
        log.info("subscription %s was stored by its webhook first; completed it", subscription.id)
    idempotency.succeed(op, subscription.id)
    db.session.commit()
    metrics.PAYMENT_OPERATIONS.labels(operation="subscription.create", outcome="created").inc()
    return Result(subscription, created=True)


def cancel_subscription(subscription_id: int) -> Result[Subscription]:
    subscription = get_subscription(subscription_id)
    if subscription.status == "canceled":
        return _existing("subscription.cancel", subscription, subscription_id=subscription.id)
    stripe_id = subscription.stripe_subscription_id
    key = idempotency.derive_key("subscription.cancel", subscription.customer.user_id, stripe_id or "", 0)
    db.session.commit()  # no transaction stays open while Stripe answers
    stripe_sub = get_gateway().cancel_subscription(stripe_id, key)
    subscription.status = stripe_sub.get("status") or "canceled"
    db.session.commit()
    metrics.PAYMENT_OPERATIONS.labels(operation="subscription.cancel", outcome="canceled").inc()
    return Result(subscription, created=True)
