"""Stripe customers: one per platform user, created as fenced phases.

claimed → created → finished
- claimed: the operation is ours. Under a later generation (the first failed, or its
  customer was deleted since), a live customer of ours on Stripe is looked for first
  and adopted. Else it is created under this generation's key; a resumed request
  replays the same key and Stripe answers with what it made.
- created: the Stripe customer's id is on the operation.
- finished: our row links it and the operation succeeds, in one transaction.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..http_errors import ApiError
from ..models import Customer, stripe_customer_deleted
from ..stripe_gateway.errors import is_replayed
from ..stripe_gateway.gateway import get_gateway
from ..stripe_gateway.library import StripeError
from . import phases
from .idempotency import owner_token
from .models import PaymentOperation
from .operations import Result, existing, run_owned
from .phases import CLAIMED, Run

log = logging.getLogger(__name__)

OPERATION = "customer.create"
CREATED = "created"


def get_customer(customer_id: int) -> Customer:
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise ApiError(404, "customer_not_found", "No customer with this id.", "Check the customer id.")
    return customer


def create_customer(user_id: str, email: str, name: str | None) -> Result[Customer]:
    found = db.session.scalar(select(Customer).where(Customer.user_id == user_id))
    if found is not None and found.stripe_customer_id:
        _refuse_other_details(found, email, name)
        return existing(OPERATION, found, customer_id=found.id)
    params = create_params(user_id, email, name)
    claim = phases.acquire(OPERATION, f"{OPERATION}:{user_id}", user_id, params, owner_token(), reopen=_unlinked)
    if claim.run is None:
        assert claim.done is not None  # no run: the operation is finished
        customer = db.session.get_one(Customer, claim.done.result_id)
        _refuse_other_details(customer, email, name)
        return existing(OPERATION, customer, customer_id=customer.id)
    run = claim.run
    return run_owned(run, lambda: _run(run), lambda row_id: db.session.get(Customer, row_id))


def create_params(user_id: str, email: str, name: str | None) -> dict[str, Any]:
    """What a create sends to Stripe (and stores on its operation)."""
    params: dict[str, Any] = {"email": email, "metadata": {"kamiyo_user_id": user_id}}
    if name:
        params["name"] = name
    return params


def _refuse_other_details(customer: Customer, email: str, name: str | None) -> None:
    """A repeated create answers with the customer made before, if it is the one asked for:
    with another email or name it is a 409 that shows what is stored (a create never updates;
    see the README). A name not given (or null) matches any."""
    differ = [
        field
        for field, asked, stored in (("email", email, customer.email), ("name", name, customer.name))
        if asked is not None and asked != stored
    ]
    if not differ:
        return
    raise ApiError(
        409,
        "customer_exists_with_different_details",
        "A customer already exists for this user_id, with other details.",
        "Use the stored customer as it is (see `stored`), or send the stored values; a create never changes "
        "a customer.",
        fields=differ,
        param=differ[0],
        extra={"stored": {"id": customer.id, "email": customer.email, "name": customer.name}},
    )


def _unlinked(op: PaymentOperation) -> bool:
    """The customer this operation made was deleted on Stripe (its row unlinked): make a new one."""
    customer = db.session.get(Customer, op.result_id) if op.result_id else None
    return customer is None or customer.stripe_customer_id is None


class CustomerGone(Exception):
    """The Stripe customer to link was deleted on Stripe meanwhile (its deletion applied here)."""


def _run(run: Run) -> Customer:
    while True:
        if run.recovery_point == CLAIMED:
            _create(run)
        try:
            return finish(run)
        except CustomerGone:
            # Resumed after `created`, or deleted while we finished: the next generation makes a new one.
            if run.new_keys >= phases.MAX_NEW_KEYS:
                raise ApiError(
                    503,
                    "customer_deleted_meanwhile",
                    "The customer was deleted on Stripe meanwhile.",
                    "Retry the request.",
                    headers={"Retry-After": "1"},
                ) from None
            phases.next_generation(run, CLAIMED)


def _create(run: Run) -> None:
    # A later generation, or a resumed one whose key Stripe may have forgotten, asks first.
    asks_first = run.generation > 0 or (run.attempts > 1 and run.sent_long_ago())
    made = _ours_on_stripe(run) if asks_first else None
    if made is None:
        try:
            made = phases.stripe_step(run, lambda: get_gateway().create_customer(run.params, run.key))
        except StripeError as exc:
            if not is_replayed(exc) or run.new_keys >= phases.MAX_NEW_KEYS:
                raise
            # Stripe stored an error for this key (a 500): what it made is unknown, and the key
            # can only replay that error. The next generation looks on Stripe first.
            phases.next_generation(run, CLAIMED)
            return _create(run)
        if stripe_customer_deleted(made["id"]):
            # The key replays a customer deleted since (its deletion was applied here): a new one.
            phases.next_generation(run, CLAIMED)
            return _create(run)
    run.stripe_object = made
    phases.atomic_phase(run, CREATED, stripe_object_id=made["id"])


def _ours_on_stripe(run: Run) -> dict[str, Any] | None:
    """A live Stripe customer made for this user (by an earlier generation, or a worker we
    lost track of), so that a new key never makes a second one."""
    params = run.params
    found = phases.stripe_step(
        run, lambda: get_gateway().find_customers("kamiyo_user_id", run.user_id, params["email"])
    )
    live = sorted((c for c in found if not stripe_customer_deleted(c["id"])), key=lambda c: c.get("created") or 0)
    if live:
        log.info("customer operation %s adopts Stripe customer %s", run.op_id, live[0]["id"])
    return live[0] if live else None


def finish(run: Run) -> Customer:
    made = run.stripe_object or {**run.params, "id": run.stripe_object_id}  # resumed after `created`
    store = lambda: link(run.user_id, made).id  # noqa: E731
    try:
        row_id = phases.finish(run, store)
    except IntegrityError:
        # Its customer.created webhook stored the row meanwhile (another transaction): use it.
        row_id = phases.finish(run, store)
    return db.session.get_one(Customer, row_id)


def link(user_id: str, stripe_customer: dict[str, Any]) -> Customer:
    """Our row for this user, linked to this Stripe customer (no commit). Raises CustomerGone
    for a customer whose deletion was applied: checked in the linking transaction itself."""
    if stripe_customer_deleted(stripe_customer["id"]):
        raise CustomerGone(stripe_customer["id"])
    row = db.session.scalar(select(Customer).where(Customer.stripe_customer_id == stripe_customer["id"]))
    if row is not None:
        log.info("customer %s was stored by its webhook or reconcile first; using it", row.id)
        return row
    # A user whose Stripe customer was deleted keeps their row: it is linked to the new one.
    row = db.session.scalar(select(Customer).where(Customer.user_id == user_id))
    if row is None:
        row = Customer(user_id=user_id)
        db.session.add(row)
    elif row.stripe_customer_id is not None:
        log.warning(
            "user %s already has Stripe customer %s; %s is left to `payments reconcile`",
            user_id,
            row.stripe_customer_id,
            stripe_customer["id"],
        )
        return row
    row.email = stripe_customer.get("email") or ""
    row.name = stripe_customer.get("name")
    row.stripe_customer_id = stripe_customer["id"]
    row.last_event_at = row.last_event_rank = row.last_event_id = None  # events of another object
    db.session.flush()
    return row
