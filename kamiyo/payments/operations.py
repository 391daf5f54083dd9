"""What the customer and subscription use cases share: their answer, the dedup answer,
and how a request that lost its operation to another one answers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..extensions import db
from ..http_errors import ApiError
from ..stripe_gateway.metrics import PAYMENT_OPERATIONS
from . import idempotency, metrics
from .models import PaymentOperation
from .phases import Run, Superseded

T = TypeVar("T")


@dataclass
class Result(Generic[T]):
    value: T
    created: bool  # False: an existing record was returned (idempotent replay)


def existing(operation: str, value: T, **fields: Any) -> Result[T]:
    """An idempotent replay: the record we already have, not a new Stripe call."""
    idempotency.log_dedup(operation, **fields)
    PAYMENT_OPERATIONS.labels(operation=operation, outcome=metrics.EXISTING).inc()
    return Result(value, created=False)


def run_owned(run: Run, body: Callable[[], T], load: Callable[[int], T | None]) -> Result[T]:
    """Run an owned operation to its end. Superseded on the way (our lease ran out and another
    request took over): answer the operation's result if it has one by now, else 409."""
    try:
        value = body()
    except Superseded:
        db.session.rollback()
        op = db.session.get(PaymentOperation, run.op_id)
        found = load(op.result_id) if op is not None and op.status == "succeeded" and op.result_id else None
        if found is not None:
            return existing(run.operation, found, operation_id=run.op_id)
        raise ApiError(
            409,
            "operation_superseded",
            "Another request took this operation over while this one was delayed.",
            "Retry the request: it returns the operation's result once it is done.",
            headers={"Retry-After": "1"},
        ) from None
    PAYMENT_OPERATIONS.labels(operation=run.operation, outcome=metrics.CREATED).inc()
    return Result(value, created=True)
