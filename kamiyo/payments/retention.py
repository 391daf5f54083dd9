"""Daily clean-up of the payments records that would otherwise grow for ever.

Operation claims stay: they are the durable guard against a second customer.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app
from sqlalchemy import delete

from ..extensions import db, rowcount
from ..models import utcnow
from ..stripe_gateway.models import StripeCall
from .models import ClientIdempotencyKey

log = logging.getLogger(__name__)


def purge_expired_records(now: dt.datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=int(current_app.config["STRIPE_CALLS_RETENTION_DAYS"]))
    purged = {
        "client_idempotency_keys": rowcount(
            db.session.execute(delete(ClientIdempotencyKey).where(ClientIdempotencyKey.expires_at <= now))
        ),
        "stripe_calls": rowcount(db.session.execute(delete(StripeCall).where(StripeCall.created_at < cutoff))),
    }
    db.session.commit()
    log.info("purged expired payments records: %s", purged, extra=purged)
    return purged
