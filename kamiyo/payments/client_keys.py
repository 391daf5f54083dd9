"""The caller's own `Idempotency-Key` header (IETF httpapi draft semantics).

Same key and body: the stored answer is replayed. Same key, other body: 422.
While the first request still runs: 409. Failures are not stored, so a retry
with the same key runs again.

A record in flight is held by the request that wrote it, under that request's
owner token: the token its payment operation is claimed with. It is held as
long as that request owns its operation (the operation's lease, renewed before
each Stripe step), or, before it has claimed one, for a lease of its own. Once
the first request lost its operation (taken over after its lease ran out), a
retry takes the record over and runs: it then waits for the operation's current
owner or replays its result. Every write to the record is conditional on the
owner token, so the first request, when it wakes, stores nothing over it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re

from flask import current_app, g, make_response, request
from sqlalchemy import delete, select, update

from ..claims import claim
from ..extensions import db, rowcount
from ..http_errors import ApiError
from ..models import utcnow
from .idempotency import canonical_json, log_dedup, owner_token
from .models import ClientIdempotencyKey, PaymentOperation

CLIENT_KEY_RE = re.compile(r"^[\x20-\x7e]{1,255}$")  # printable ASCII, space included


def _in_flight() -> ApiError:
    return ApiError(
        409,
        "idempotency_key_in_flight",
        "A request with this Idempotency-Key is in progress.",
        "Retry in a moment.",
        headers={"Retry-After": "1"},
    )


def _fingerprint() -> str:
    body = request.get_json(silent=True)
    payload = canonical_json(body) if body is not None else request.get_data(as_text=True)
    return hashlib.sha256(f"{request.method} {request.path}\n{payload}".encode()).hexdigest()


def _lease(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=float(current_app.config["OPERATION_LEASE_SECONDS"]))


def _held(record: ClientIdempotencyKey, now: dt.datetime) -> bool:
    """Is the request that holds this record still at work?"""
    operation = db.session.execute(
        select(PaymentOperation.status, PaymentOperation.lease_expires_at).where(
            PaymentOperation.owner_token == record.owner_token
        )
    ).first()
    if operation is not None and operation.status == "pending":
        return operation.lease_expires_at is not None and operation.lease_expires_at > now
    # No operation of its own running (not claimed yet, or finished and answering).
    return record.lease_expires_at is not None and record.lease_expires_at > now


def client_idempotent(view):
    """Honour an optional `Idempotency-Key` on a POST (see the module's docstring)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        key = key.strip('"')  # the draft sends it as a quoted string
        if not CLIENT_KEY_RE.fullmatch(key):
            raise ApiError(
                400,
                "idempotency_key_invalid",
                "The Idempotency-Key header is not valid.",
                "Send 1 to 255 printable ASCII characters; a UUID is recommended.",
                param="Idempotency-Key",
            )
        fingerprint = _fingerprint()
        replay = _hold(key, fingerprint)
        if replay is not None:
            return replay
        return _run(view, key, args, kwargs)

    return wrapper


def _where_mine(key: str):
    return (
        ClientIdempotencyKey.api_key_id == g.api_key_id,
        ClientIdempotencyKey.key == key,
        ClientIdempotencyKey.owner_token == owner_token(),
    )


def _hold(key: str, fingerprint: str):
    """Take the key for this request (None), or answer from the record (a replay, 409, 422)."""
    token = owner_token()
    for _ in range(3):  # a record that expires or is purged while we look: look again
        now = utcnow()
        db.session.execute(
            delete(ClientIdempotencyKey).where(
                ClientIdempotencyKey.api_key_id == g.api_key_id,
                ClientIdempotencyKey.key == key,
                ClientIdempotencyKey.expires_at <= now,
            )
        )
        if claim(
            ClientIdempotencyKey(
                api_key_id=g.api_key_id,
                key=key,
                fingerprint=fingerprint,
                status="in_flight",
                owner_token=token,
                lease_expires_at=_lease(now),
                created_at=now,
                expires_at=now + dt.timedelta(hours=int(current_app.config["IDEMPOTENCY_KEY_TTL_HOURS"])),
            )
        ):
            db.session.commit()
            return None
        existing = db.session.scalar(
            select(ClientIdempotencyKey).where(
                ClientIdempotencyKey.api_key_id == g.api_key_id, ClientIdempotencyKey.key == key
            )
        )
        if existing is None:
            continue
        if existing.fingerprint != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request.",
                "Use a new Idempotency-Key for a different request.",
            )
        if existing.status == "completed":
            return _replayed(existing)
        if _held(existing, now):
            raise _in_flight()
        taken = rowcount(
            db.session.execute(
                update(ClientIdempotencyKey)
                .where(
                    ClientIdempotencyKey.id == existing.id,
                    ClientIdempotencyKey.status == "in_flight",
                    ClientIdempotencyKey.owner_token == existing.owner_token,
                )
                .values(owner_token=token, lease_expires_at=_lease(now))
                .execution_options(synchronize_session=False)
            )
        )
        db.session.commit()
        if taken == 1:
            return None
    raise _in_flight()


def _run(view, key: str, args, kwargs):
    try:
        response = make_response(view(*args, **kwargs))
    except BaseException:
        db.session.rollback()
        db.session.execute(delete(ClientIdempotencyKey).where(*_where_mine(key)))
        db.session.commit()
        raise
    # Stored only while the key is still ours: a retry that took it over answers for it.
    db.session.execute(
        update(ClientIdempotencyKey)
        .where(*_where_mine(key), ClientIdempotencyKey.status == "in_flight")
        .values(status="completed", response_status=response.status_code, response_body=response.get_data(as_text=True))
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return response


def _replayed(existing: ClientIdempotencyKey):
    log_dedup("client_key", status=existing.response_status)
    response = make_response(existing.response_body, existing.response_status)
    response.headers["Content-Type"] = "application/json"
    response.headers["Idempotent-Replayed"] = "true"
    return response
