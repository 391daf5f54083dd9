"""Subscriptions: at most one live subscription per customer and price, made as fenced phases.

claimed → payment_method_ready → create_sent → created → finished
- claimed: the card is attached and made the default (or the customer's default is
  checked: none is a 402, before anything was sent).
- payment_method_ready: under a later generation, Stripe is asked first for a live
  subscription of ours to this price, and it is adopted. Else `create_sent` is recorded,
  then the create is sent under this generation's key.
- create_sent: a resumed request replays the create first, with the same key, before any
  local check: a reply that was lost never turns into a failure and a new key.
- created: the Stripe subscription's id is on the operation.
- finished: our row is stored and the operation succeeds, in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..http_errors import ApiError
from ..models import (
    LIVE_SUBSCRIPTION_STATUSES,
    Subscription,
    live_subscription,
    promote_duplicates,
    stripe_customer_deleted,
)
from ..observability.alerts import alert_duplicate_subscription
from ..observability.request_context import current_request_id
from ..stripe_gateway.errors import (
    CircuitOpenError,
    client_details,
    is_card_error,
    is_replayed,
    is_resource_missing,
    map_stripe_error,
    missing_param,
)
from ..stripe_gateway.gateway import get_gateway
from ..stripe_gateway.library import StripeError
from ..stripe_gateway.metrics import PAYMENT_OPERATIONS
from ..stripe_objects import price_id as price_of
from ..stripe_objects import subscription_period_end
from . import idempotency, metrics, phases, prices
from .customers import get_customer
from .models import PaymentOperation
from .operations import Result, existing, run_owned
from .phases import CLAIMED, FINISHED, Run

log = logging.getLogger(__name__)

OPERATION = "subscription.create"
CANCEL_OPERATION = "subscription.cancel"
PAYMENT_METHOD_READY, CREATE_SENT, CREATED = "payment_method_ready", "create_sent", "created"


def get_subscription(subscription_id: int) -> Subscription:
    subscription = db.session.get(Subscription, subscription_id)
    if subscription is None:
        raise ApiError(404, "subscription_not_found", "No subscription with this id.", "Check the subscription id.")
    return subscription


def create_subscription(customer_id: int, price_id: str, tier: str, payment_method: str | None) -> Result[Subscription]:
    customer = get_customer(customer_id)
    prices.check_tier(price_id, tier)  # PRICE_TIERS: without a Stripe call
    if not customer.stripe_customer_id:
        raise ApiError(
            409,
            "customer_deleted",
            "This customer was deleted on Stripe.",
            "Create the customer again (POST /customers with the same user_id), then subscribe.",
        )
    found = live_subscription(customer.id, price_id)
    if found is not None:
        return existing(OPERATION, found, subscription_id=found.id)
    prices.check_on_stripe(price_id)  # before any card is attached
    # error_if_incomplete: a declined first payment is a 402 now, not an `incomplete`
    # subscription that would hold this customer and price for Stripe's ~23 h.
    params = {
        "customer": customer.stripe_customer_id,
        "items": [{"price": price_id}],
        "payment_behavior": "error_if_incomplete",
        "payment_method": payment_method,
        "metadata": {"kamiyo_customer_id": str(customer.id), "kamiyo_tier": tier},
    }
    claim = phases.acquire(
        OPERATION,
        f"{OPERATION}:{customer.id}:{price_id}",
        customer.user_id,
        params,
        idempotency.owner_token(),
        reopen=_no_longer_live,
    )
    if claim.run is None:
        assert claim.done is not None  # no run: the operation is finished
        subscription = db.session.get_one(Subscription, claim.done.result_id)
        return existing(OPERATION, subscription, subscription_id=subscription.id)
    run = claim.run
    return run_owned(run, lambda: _run(run), lambda row_id: db.session.get(Subscription, row_id))


def _no_longer_live(op: PaymentOperation) -> bool:
    subscription = db.session.get(Subscription, op.result_id) if op.result_id else None
    return subscription is None or subscription.status not in LIVE_SUBSCRIPTION_STATUSES


def _run(run: Run) -> Subscription:
    phase = {
        CLAIMED: _prepare_payment_method,
        PAYMENT_METHOD_READY: _send_create,
        CREATE_SENT: _replay_create,
        CREATED: _finish,
    }
    while run.recovery_point != FINISHED:
        phase[run.recovery_point](run)
    return db.session.get_one(Subscription, run.result_id)


def _prepare_payment_method(run: Run) -> None:
    """Stored params throughout: a resumed request attaches to the customer it started with."""
    gateway, params = get_gateway(), run.params
    customer, payment_method = params["customer"], params.get("payment_method")
    if payment_method:
        # Each step has its own key, derived from the operation's: a resumed request replays them.
        # Attaching a card again is harmless: an error Stripe stored for a step's key is left
        # behind with a new generation (its keys derive from it), not replayed for a day.
        step = ATTACH
        try:
            phases.stripe_step(
                run, lambda: gateway.attach_payment_method(payment_method, customer, run.step_key("pm.attach"))
            )
            step = SET_DEFAULT
            phases.stripe_step(
                run, lambda: gateway.set_default_payment_method(customer, payment_method, run.step_key("pm.default"))
            )
        except StripeError as exc:
            if not is_replayed(exc) or run.new_keys >= phases.MAX_NEW_KEYS:
                raise actionable(exc, step, customer) from exc
            phases.next_generation(run, CLAIMED)
            return
    else:
        try:
            stripe_customer = phases.stripe_step(run, lambda: gateway.retrieve_customer(customer))
        except StripeError as exc:
            raise actionable(exc, RETRIEVE, customer) from exc
        settings = stripe_customer.get("invoice_settings") or {}
        if not settings.get("default_payment_method") and not stripe_customer.get("default_source"):
            phases.fail_permanently(run, "payment_method_required")  # nothing was sent under this key
            raise ApiError(
                402,
                "payment_method_required",
                "This customer has no payment method on file.",
                "Send a payment_method (a PaymentMethod id from the checkout) with the request.",
            )
    phases.atomic_phase(run, PAYMENT_METHOD_READY)


def _send_create(run: Run) -> None:
    if run.generation > 0 and _adopted(run):
        return
    phases.atomic_phase(run, CREATE_SENT)
    _create(run, replay=False)


def _replay_create(run: Run) -> None:
    if run.sent_long_ago() and _adopted(run):  # Stripe may have forgotten the key: look first
        return
    _create(run, replay=True)


def _create(run: Run, replay: bool) -> None:
    params = {name: value for name, value in run.params.items() if name != "payment_method"}
    try:
        made = phases.stripe_step(run, lambda: get_gateway().create_subscription(params, run.key))
    except StripeError as exc:
        if not is_replayed(exc) or run.new_keys >= phases.MAX_NEW_KEYS:
            raise actionable(exc, CREATE, params["customer"]) from exc
        # Stripe stored an error for this key (a 500): what it made is unknown, and the key can
        # only replay that error. The next generation asks Stripe first, then uses a new key.
        phases.next_generation(run, PAYMENT_METHOD_READY)
        return
    if replay and _cancelled(made):
        # The key replays a subscription cancelled since: the next generation makes a new one.
        # (A create of this request that was cancelled meanwhile is stored as Stripe has it.)
        phases.next_generation(run, PAYMENT_METHOD_READY)
        return
    run.stripe_object = made
    phases.atomic_phase(run, CREATED, stripe_object_id=made["id"])


ATTACH, SET_DEFAULT, RETRIEVE, CREATE = "attach", "set_default", "retrieve", "create"


def actionable(exc: StripeError, step: str, customer: str) -> Exception:
    """Stripe's refusal of a subscription step as the client can act on it: which of the
    request's fields is at fault. PCI-safe: no Stripe text, no id is echoed. Anything else is
    left to the generic mapping (kamiyo/http_errors.py)."""
    if is_card_error(exc):
        mapped = map_stripe_error(exc, current_request_id())
        return ApiError(
            mapped["http_status"],
            mapped["error_code"],
            mapped["message"],
            mapped["user_action"],
            param="payment_method",
            extra=client_details(exc),
        )
    if not is_resource_missing(exc):
        return exc
    named = missing_param(exc)  # Stripe names it; the local emulator does not
    if step in (SET_DEFAULT, RETRIEVE) or named == "customer":
        return customer_missing_on_stripe()
    if step == CREATE:
        return prices.price_not_found()
    if named is None:  # attach, and Stripe did not say which: the card, or the customer?
        missing = _customer_missing(customer)
        if missing is None:
            return exc  # cannot tell now: the generic answer
        if missing:
            return customer_missing_on_stripe()
    return ApiError(
        400,
        "payment_method_invalid",
        "Stripe does not know this payment method.",
        "Send the PaymentMethod id (pm_...) that Stripe's checkout made for this Stripe account.",
        param="payment_method",
    )


def _customer_missing(customer: str) -> bool | None:
    """Is this Stripe customer gone? None when Stripe cannot say now (down, breaker open)."""
    try:
        get_gateway().retrieve_customer(customer)
    except StripeError as exc:
        return True if is_resource_missing(exc) else None
    except CircuitOpenError:
        return None
    return False


def customer_missing_on_stripe() -> ApiError:
    return ApiError(
        409,
        "customer_missing_on_stripe",
        "This customer is no longer on the Stripe account this service uses.",
        "Contact support and quote the support id: the customer must be created again on Stripe.",
        param="customer_id",
    )


def _cancelled(made: dict[str, Any]) -> bool:
    status = db.session.scalar(select(Subscription.status).where(Subscription.stripe_subscription_id == made["id"]))
    db.session.rollback()  # no snapshot held into the next step
    return (status or made.get("status")) in ("canceled", "incomplete_expired")


def _adopted(run: Run) -> bool:
    """Before a new key is sent: a live subscription of ours to this price on Stripe (made by an
    earlier generation, or by a worker we lost track of) is adopted instead of making another."""
    params = run.params
    customer, price, ours = params["customer"], params["items"][0]["price"], params["metadata"]["kamiyo_customer_id"]
    found = phases.stripe_step(run, lambda: list(get_gateway().iter_subscriptions(customer=customer)))
    live = sorted(
        (
            s
            for s in found
            if s.get("status") in LIVE_SUBSCRIPTION_STATUSES
            and price_of(s) == price
            and (s.get("metadata") or {}).get("kamiyo_customer_id") == ours
        ),
        key=lambda s: s.get("created") or 0,
    )
    if not live:
        return False
    log.info("subscription operation %s adopts Stripe subscription %s", run.op_id, live[0]["id"])
    run.stripe_object = live[0]
    phases.atomic_phase(run, CREATED, stripe_object_id=live[0]["id"])
    return True


def _finish(run: Run) -> None:
    params = run.params
    made = run.stripe_object
    if made is None or stripe_customer_deleted(params["customer"]):
        # Resumed after `created`, or its customer was deleted meanwhile (Stripe then cancelled
        # it): what Stripe holds now is what we store.
        stripe_id = run.stripe_object_id
        assert stripe_id is not None  # set when the phase moved to `created`
        made = phases.stripe_step(run, lambda: get_gateway().retrieve_subscription(stripe_id))
    wanted = (
        int(params["metadata"]["kamiyo_customer_id"]),
        params["items"][0]["price"],
        params["metadata"]["kamiyo_tier"],
    )
    try:
        run.result_id = phases.finish(run, lambda: store(made, *wanted))
    except IntegrityError:
        # Its webhook's row was committed meanwhile by another transaction (PostgreSQL): use it.
        run.result_id = phases.finish(run, lambda: store(made, *wanted))
    duplicate = db.session.get(Subscription, run.result_id)
    if duplicate is not None and duplicate.duplicate_of is not None:
        alert_duplicate(duplicate)


def store(made: dict[str, Any], customer_id: int, price_id: str, tier: str) -> int:
    """Our row for a Stripe subscription we made or adopted (no commit); returns its id."""
    row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == made["id"]))
    if row is not None:
        # Its webhook stored the row first (with the newer status): only what it lacks is ours to add.
        log.info("subscription %s was stored by its webhook first; completed it", row.id)
        row.price_id, row.tier = price_id, tier
        return row.id
    status = str(made.get("status") or "incomplete")
    other = live_subscription(customer_id, price_id) if status in LIVE_SUBSCRIPTION_STATUSES else None
    row = Subscription(
        customer_id=customer_id,
        price_id=price_id,
        tier=tier,
        status=status,
        stripe_subscription_id=made["id"],
        current_period_end=subscription_period_end(made),
        duplicate_of=other.id if other is not None else None,
    )
    db.session.add(row)
    db.session.flush()
    return row.id


def alert_duplicate(row: Subscription) -> None:
    original = db.session.get_one(Subscription, row.duplicate_of)
    alert_duplicate_subscription(
        row.stripe_subscription_id or "", original.stripe_subscription_id or "", row.customer_id, row.price_id
    )


def cancel_subscription(subscription_id: int) -> Result[Subscription]:
    subscription = get_subscription(subscription_id)
    if subscription.status == "canceled":
        return existing(CANCEL_OPERATION, subscription, subscription_id=subscription.id)
    cancel_on_stripe(subscription.stripe_subscription_id or "")
    PAYMENT_OPERATIONS.labels(operation=CANCEL_OPERATION, outcome=metrics.CANCELED).inc()
    return Result(get_subscription(subscription_id), created=True)


def cancel_on_stripe(stripe_subscription_id: str) -> str:
    """Cancel on Stripe (idempotent: one key per subscription) and store the status; returns it."""
    row = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id))
    user_id = row.customer.user_id if row is not None else ""
    key = idempotency.derive_key(CANCEL_OPERATION, user_id, stripe_subscription_id, 0)
    db.session.commit()  # no transaction stays open while Stripe answers
    status = str(get_gateway().cancel_subscription(stripe_subscription_id, key).get("status") or "canceled")
    if row is not None:
        db.session.execute(update(Subscription).where(Subscription.id == row.id).values(status=status[:32]))
        if status not in LIVE_SUBSCRIPTION_STATUSES:
            promote_duplicates(row.id)  # a flagged duplicate of it holds the customer and price now
        db.session.commit()
    return status
