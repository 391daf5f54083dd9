"""Daily clean-up of the payments records that would otherwise grow for ever.

Operation claims stay: they are the durable guard against a second customer. What an
operation sent to Stripe (`params_json`: an email, a name, a card's id) is cleared once
the operation has finished (succeeded, or failed) and its replay window has passed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import and_, delete, or_, update

from ..extensions import db, rowcount
from ..models import utcnow
from ..stripe_gateway.models import StripeCall
from .models import ClientIdempotencyKey, PaymentOperation
from .phases import FINISHED

log = logging.getLogger(__name__)

# What a cleared operation holds instead (the column is NOT NULL, and `Run.params` reads JSON).
CLEARED_PARAMS = "{}"
# Stripe keeps an idempotency key about a day.
STRIPE_KEY_DAY = dt.timedelta(hours=24)


def params_window(config: Mapping[str, Any]) -> dt.timedelta:
    """How long a finished operation keeps its parameters: as long as a retry could still be
    answered from a key, Stripe's (a day) or the caller's (IDEMPOTENCY_KEY_TTL_HOURS)."""
    return max(STRIPE_KEY_DAY, dt.timedelta(hours=float(config["IDEMPOTENCY_KEY_TTL_HOURS"])))


def clear_finished_params(now: dt.datetime) -> int:
    """Clear the parameters of operations that finished before the window; returns how many.

    Finished: succeeded (at its last recovery point), or failed. Nothing reads their
    parameters again. A repeated create answers a succeeded one from our row; a create after
    its result no longer stands (a cancelled subscription), or after a failure, takes the
    operation over with the new request's parameters. `payments reconcile` adopts a customer
    from Stripe's object, and links it without resuming a failed operation whose parameters
    are cleared (reconcile.py). A failed one keeps them for the window all the same, for the
    operator looking into the failure and the next daily reconcile. A pending operation (in
    flight, or resumable after its lease) keeps its own: the phase runner derives the Stripe
    key and the request from them.

    The condition is in the UPDATE itself, so an operation taken over meanwhile is left
    alone; `updated_at` stays as it was (the dashboard counts operations finished by it).
    """
    cutoff = now - params_window(current_app.config)
    return rowcount(
        db.session.execute(
            update(PaymentOperation)
            .where(
                or_(
                    and_(PaymentOperation.status == "succeeded", PaymentOperation.recovery_point == FINISHED),
                    PaymentOperation.status == "failed",
                ),
                PaymentOperation.updated_at < cutoff,
                PaymentOperation.params_json != CLEARED_PARAMS,
            )
            .values(params_json=CLEARED_PARAMS, updated_at=PaymentOperation.updated_at)
            .execution_options(synchronize_session=False)
        )
    )


def purge_expired_records(now: dt.datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=int(current_app.config["STRIPE_CALLS_RETENTION_DAYS"]))
    purged = {
        "client_idempotency_keys": rowcount(
            db.session.execute(delete(ClientIdempotencyKey).where(ClientIdempotencyKey.expires_at <= now))
        ),
        "stripe_calls": rowcount(db.session.execute(delete(StripeCall).where(StripeCall.created_at < cutoff))),
        "operation_params_cleared": clear_finished_params(now),
    }
    db.session.commit()
    log.info("purged expired payments records: %s", purged, extra=purged)
    return purged
