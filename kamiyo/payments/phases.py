"""Payment operations as fenced phases with recovery points.

After brandur's rocket-rides-atomic: an operation is a row with a status, a
recovery point, a generation and an owner token. Each phase is one transaction
that ends in a recovery point, and a request that resumes an operation goes on
from its recovery point. Unlike there, no transaction stays open while Stripe
answers: a Stripe step runs between two phases, after the lease was renewed.

Fencing: `acquire` writes a fresh owner token in its compare-and-set, and every
later write (a phase, a lease renewal, a release, a failure, a new generation)
is an UPDATE conditional on the row's id, status, owner token and generation.
When no row matches, another request took the operation over after our lease
ran out: `Superseded` is raised and we change nothing and call Stripe no more.

This module owns every commit of an operation; `idempotency.py` only derives
keys and owner tokens, and kamiyo/claims.py, which inserts the claim, commits
nothing either.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import current_app
from sqlalchemy import select, update

from .. import claims
from ..extensions import db, rowcount
from ..http_errors import ApiError
from ..models import utcnow
from ..stripe_gateway.errors import CircuitOpenError, is_replayed, is_transient
from ..stripe_gateway.library import StripeError
from ..stripe_gateway.metrics import PAYMENT_OPERATIONS
from . import metrics
from .idempotency import canonical_json, derive_key
from .models import PaymentOperation

log = logging.getLogger(__name__)

T = TypeVar("T")

CLAIMED, FINISHED = "claimed", "finished"
# New keys one request may move to after Stripe stored an error for the last: never a loop.
MAX_NEW_KEYS = 3
# Stripe forgets an idempotency key after about 24 hours: a key first sent longer ago than
# this may make a second object, so Stripe is asked first.
STRIPE_KEY_MEMORY = dt.timedelta(hours=23)


class Superseded(Exception):
    """Another request owns this operation now: ours ran out of lease and was taken over."""


@dataclass
class Run:
    """An operation this request owns, as it stood when claimed (and as our phases moved it)."""

    op_id: int
    operation: str
    user_id: str
    token: str
    generation: int
    recovery_point: str
    params_json: str
    attempts: int
    recovery_point_at: dt.datetime | None = None
    stripe_object_id: str | None = None
    # What Stripe answered in this request (a resumed run has only the id).
    stripe_object: dict[str, Any] | None = field(default=None, repr=False)
    new_keys: int = 0  # generations this request moved on (bounded: MAX_NEW_KEYS)
    result_id: int | None = None  # our row, once finished

    @classmethod
    def of(cls, op: PaymentOperation) -> Run:
        return cls(
            op.id,
            op.operation,
            op.user_id,
            op.owner_token or "",
            op.generation,
            op.recovery_point,
            op.params_json,
            op.attempts,
            op.recovery_point_at,
            op.stripe_object_id,
        )

    @property
    def params(self) -> dict[str, Any]:
        """The stored parameters: a resumed operation sends exactly what its first attempt sent."""
        return json.loads(self.params_json)

    def sent_long_ago(self) -> bool:
        """Was this generation's key perhaps sent so long ago that Stripe forgot it?"""
        return self.recovery_point_at is not None and utcnow() - self.recovery_point_at > STRIPE_KEY_MEMORY

    @property
    def key(self) -> str:
        """This generation's Stripe idempotency key."""
        return derive_key(self.operation, self.user_id, self.params_json, self.generation)

    def step_key(self, step: str) -> str:
        """The key of one of this generation's preparatory steps (attach a card, say)."""
        return derive_key(step, self.key, "", 0)


def lease_end(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=float(current_app.config["OPERATION_LEASE_SECONDS"]))


def _write(run: Run, **values: Any) -> None:
    """The fenced UPDATE, in the session's transaction; Superseded (rolled back) if not ours."""
    result = db.session.execute(
        update(PaymentOperation)
        .where(
            PaymentOperation.id == run.op_id,
            PaymentOperation.status == "pending",
            PaymentOperation.owner_token == run.token,
            PaymentOperation.generation == run.generation,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        db.session.rollback()
        log.warning(
            "payment operation %s was taken over by another request; this one stops",
            run.op_id,
            extra={"operation_id": run.op_id},
        )
        PAYMENT_OPERATIONS.labels(operation=run.operation, outcome=metrics.SUPERSEDED).inc()
        raise Superseded(run.op_id)


def atomic_phase(
    run: Run, recovery_point: str, work: Callable[[], dict[str, Any] | None] | None = None, **values: Any
) -> None:
    """One phase in one transaction: our ownership checked first, then `work()` (local writes;
    it may return more values for the operation row), then the recovery point, committed."""
    now = utcnow()
    try:
        _write(
            run,
            **{
                "recovery_point": recovery_point,
                "recovery_point_at": now,
                "lease_expires_at": lease_end(now),
                **values,
            },
        )
        extra = work() if work is not None else None
        if extra:
            db.session.execute(
                update(PaymentOperation)
                .where(PaymentOperation.id == run.op_id)
                .values(**extra)
                .execution_options(synchronize_session=False)
            )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    run.recovery_point, run.recovery_point_at = recovery_point, now
    if "stripe_object_id" in values:
        run.stripe_object_id = values["stripe_object_id"]


def renew(run: Run) -> None:
    """Before each Stripe step: the lease runs for one more step, if the operation is still ours."""
    _write(run, lease_expires_at=lease_end(utcnow()))
    db.session.commit()  # no transaction stays open while Stripe answers


def stripe_step(run: Run, call: Callable[[], T]) -> T:
    """One Stripe step of an owned operation: renew the lease, then call. On a transient
    failure the next identical request may resume at once (same recovery point, same key); a
    permanent one ends this generation, so that the next request starts afresh. A result
    Stripe stored for the key (is_replayed) is left to the caller, who knows what it means."""
    renew(run)
    try:
        return call()
    except StripeError as exc:
        if is_transient(exc):
            release(run)
            PAYMENT_OPERATIONS.labels(operation=run.operation, outcome=metrics.TRANSIENT_ERROR).inc()
        elif not is_replayed(exc):
            fail_permanently(run, type(exc).__name__)
        raise
    except CircuitOpenError:
        release(run)
        raise


def release(run: Run) -> None:
    """A transient failure: our lease ends now. Nothing to do when it is no longer ours."""
    try:
        _write(run, lease_expires_at=utcnow())
        db.session.commit()
    except Superseded:
        pass


def fail_permanently(run: Run, error_code: str) -> None:
    """A permanent failure before anything was made under this key: the next request starts
    afresh, under the next generation (a corrected request must not get Stripe's cached error)."""
    _write(
        run,
        status="failed",
        error_code=error_code[:64],
        lease_expires_at=None,
        recovery_point=CLAIMED,
        recovery_point_at=utcnow(),
        stripe_object_id=None,
        generation=run.generation + 1,
    )
    db.session.commit()
    run.generation += 1
    PAYMENT_OPERATIONS.labels(operation=run.operation, outcome=metrics.FAILED).inc()


def next_generation(run: Run, recovery_point: str) -> None:
    """A new Stripe key from `recovery_point` on. Callers look on Stripe first for what the
    old key may have made (see service.py): a new key must never make a second object."""
    now = utcnow()
    _write(
        run,
        generation=run.generation + 1,
        recovery_point=recovery_point,
        recovery_point_at=now,
        stripe_object_id=None,
        lease_expires_at=lease_end(now),
    )
    db.session.commit()
    run.generation += 1
    run.new_keys += 1
    run.recovery_point, run.recovery_point_at, run.stripe_object_id, run.stripe_object = recovery_point, now, None, None


def finish(run: Run, store: Callable[[], int]) -> int:
    """The last phase: `store()` writes our row and returns its id, the operation succeeds
    with it as its result. Returns that id."""
    stored: list[int] = []

    def work() -> dict[str, Any]:
        stored.append(store())
        return {"result_id": stored[-1]}

    atomic_phase(run, FINISHED, work, status="succeeded", lease_expires_at=None, error_code=None)
    return stored[-1]


# -- the claim ------------------------------------------------------------------------

POLL_INTERVAL = 0.05


@dataclass
class Claim:
    run: Run | None  # ours to run from its recovery point
    done: PaymentOperation | None = None  # or already finished: its result_id is the answer


def acquire(
    operation: str,
    scope: str,
    user_id: str,
    params: dict[str, Any],
    token: str,
    reopen: Callable[[PaymentOperation], bool] = lambda op: False,
) -> Claim:
    """Claim `scope` for the request holding `token`, or return the finished operation.

    Insert-first: concurrent identical requests make one row. Otherwise the row is taken
    over by a compare-and-set on its status, generation and owner token when it failed, its
    lease ran out (its worker died, or let go after a transient failure: resumed from its
    recovery point, with its stored parameters and key), or `reopen(op)` says its result no
    longer stands (a cancelled subscription: the next generation makes a new one).
    """
    params_json = canonical_json(params)
    now = utcnow()
    op = PaymentOperation(
        operation=operation,
        scope=scope,
        user_id=user_id,
        params_json=params_json,
        status="pending",
        recovery_point=CLAIMED,
        recovery_point_at=now,
        owner_token=token,
        lease_expires_at=lease_end(now),
        attempts=1,
        generation=0,
    )
    if claims.claim(op):
        db.session.commit()
        return Claim(Run.of(op))

    deadline = time.monotonic() + float(current_app.config["IDEMPOTENCY_WAIT_SECONDS"])
    while True:
        op = db.session.scalars(select(PaymentOperation).where(PaymentOperation.scope == scope)).one()
        taken = _take_over(op, token, params_json, reopen)
        if taken is not None:
            return taken
        if time.monotonic() >= deadline:
            raise ApiError(
                409,
                "operation_in_progress",
                "An identical request is still being processed.",
                "Retry in a moment; it will return the same result.",
                headers={"Retry-After": "1"},
            )
        db.session.rollback()  # a fresh snapshot for the next look
        time.sleep(POLL_INTERVAL)


def _take_over(
    op: PaymentOperation, token: str, params_json: str, reopen: Callable[[PaymentOperation], bool]
) -> Claim | None:
    """Claim(...) when the operation is done or now ours; None while another request owns it."""
    now = utcnow()
    fresh = {
        "status": "pending",
        "params_json": params_json,
        "recovery_point": CLAIMED,
        "recovery_point_at": now,
        "stripe_object_id": None,
        "result_id": None,
        "error_code": None,
        "attempts": 1,
    }
    if op.status == "succeeded":
        if not reopen(op):
            return Claim(None, op)
        values = {**fresh, "generation": op.generation + 1}
    elif op.status == "failed":
        values = fresh  # its generation moved on when it failed: a corrected request gets a fresh key
    elif op.lease_expires_at is not None and op.lease_expires_at <= now:
        values = {"attempts": op.attempts + 1}  # resumed as it stood: stored params, same key
    else:
        return None
    condition = [
        PaymentOperation.id == op.id,
        PaymentOperation.status == op.status,
        PaymentOperation.generation == op.generation,
    ]
    condition.append(
        PaymentOperation.owner_token == op.owner_token
        if op.owner_token is not None
        else PaymentOperation.owner_token.is_(None)
    )
    if op.status == "pending":
        condition.append(PaymentOperation.lease_expires_at <= now)
    result = db.session.execute(
        update(PaymentOperation)
        .where(*condition)
        .values(owner_token=token, lease_expires_at=lease_end(now), **values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if rowcount(result) != 1:
        return None  # another contender won: look again
    db.session.expire_all()
    return Claim(Run.of(db.session.get_one(PaymentOperation, op.id)))


def take_over_idle(scope: str, token: str, params: dict[str, Any] | None = None) -> Run | None:
    """An operation no request is running (failed, or its lease ran out), for `reconcile`;
    None when a request owns it now or it is finished. `params` replace the stored ones of a
    failed operation (whose own were cleared)."""
    op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == scope))
    if op is None or op.status == "succeeded":
        return None
    params_json = canonical_json(params) if params is not None and op.status == "failed" else op.params_json
    claim = _take_over(op, token, params_json, lambda op: False)
    return claim.run if claim is not None else None
