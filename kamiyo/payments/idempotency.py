"""Two-layer idempotency.

Layer 1, the database: an operation is claimed (unique `scope`) before Stripe
is called, so concurrent identical requests make one Stripe call; the others
wait for its result or get 409.
Layer 2, Stripe: a deterministic key derived from the claimed operation, the
same on every attempt and after a restart; a permanent failure bumps the
operation's generation so corrected input gets a fresh key.

Also the caller's own `Idempotency-Key` header (IETF httpapi draft semantics).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from flask import current_app, g, make_response, request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..http_errors import ApiError
from ..models import utcnow
from . import metrics
from .models import ClientIdempotencyKey, PaymentOperation

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.05


def canonical_json(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_key(operation: str, user_id: str, params_json: str, generation: int) -> str:
    """32 hex characters of SHA-256 over the operation: no date, no raw PII."""
    with metrics.IDEMPOTENCY_KEY_SECONDS.time():
        material = "\x1f".join((operation, user_id, params_json, str(generation)))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def stripe_key(op: PaymentOperation) -> str:
    return derive_key(op.operation, op.user_id, op.params_json, op.generation)


@dataclass
class Claim:
    op: PaymentOperation
    owned: bool  # True: we must call Stripe; False: op.status == "succeeded", use op.result_id


def _lease(now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=current_app.config["OPERATION_LEASE_SECONDS"])


def _take_over(op_id: int, expected_status: str, values: dict) -> bool:
    """Compare-and-set on the operation row: exactly one contender wins."""
    now = utcnow()
    conditions = [PaymentOperation.id == op_id, PaymentOperation.status == expected_status]
    if expected_status == "pending":
        conditions.append(PaymentOperation.lease_expires_at <= now)
    result = db.session.execute(
        update(PaymentOperation).where(*conditions).values(lease_expires_at=_lease(now), **values)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return result.rowcount == 1


def acquire(operation: str, scope: str, user_id: str, params: dict,
            reopen: Callable[[PaymentOperation], bool] = lambda op: False) -> Claim:
    """Claim `scope` for this request, or return the finished operation.

    `reopen(op)` says whether a succeeded operation no longer stands (e.g. its
    subscription was cancelled) so a new one may start under a new generation.
    """
    params_json = canonical_json(params)
    now = utcnow()
    op = PaymentOperation(operation=operation, scope=scope, user_id=user_id, params_json=params_json,
                          status="pending", lease_expires_at=_lease(now), attempts=1)
    db.session.add(op)
    try:
        db.session.commit()
        return Claim(op, owned=True)
    except IntegrityError:
        db.session.rollback()

    deadline = time.monotonic() + current_app.config["IDEMPOTENCY_WAIT_SECONDS"]
    while True:
        db.session.expire_all()
        op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == scope))
        if op.status == "succeeded":
            if not reopen(op):
                return Claim(op, owned=False)
            if _take_over(op.id, "succeeded", {"status": "pending", "generation": op.generation + 1,
                                               "params_json": params_json, "result_id": None,
                                               "attempts": 1}):
                return Claim(db.session.get(PaymentOperation, op.id), owned=True)
        elif op.status == "failed":
            # The generation was bumped when it failed: the corrected request gets a fresh Stripe key.
            if _take_over(op.id, "failed", {"status": "pending", "params_json": params_json,
                                            "error_code": None, "attempts": 1}):
                return Claim(db.session.get(PaymentOperation, op.id), owned=True)
        elif op.lease_expires_at <= utcnow():
            # Released after a transient failure, or its worker died: resume it with
            # the *stored* params and generation, hence the same Stripe key, so an
            # object Stripe already created is adopted rather than duplicated.
            if _take_over(op.id, "pending", {"attempts": op.attempts + 1}):
                return Claim(db.session.get(PaymentOperation, op.id), owned=True)
        if time.monotonic() >= deadline:
            raise ApiError(409, "operation_in_progress",
                           "An identical request is still being processed.",
                           "Retry in a moment; it will return the same result.",
                           headers={"Retry-After": "1"})
        db.session.rollback()
        time.sleep(POLL_INTERVAL)


def next_generation(op: PaymentOperation) -> str:
    """Move an owned operation to its next generation; returns its new Stripe key (committed)."""
    op = db.session.get(PaymentOperation, op.id)
    op.generation += 1
    key = stripe_key(op)
    db.session.commit()  # no transaction stays open while Stripe answers
    return key


def succeed(op: PaymentOperation, result_id: int) -> None:
    """Mark done; committed by the caller together with the result row."""
    op.status, op.result_id, op.lease_expires_at, op.error_code = "succeeded", result_id, None, None


def fail_permanently(op: PaymentOperation, error_code: str) -> None:
    op.status, op.error_code, op.lease_expires_at = "failed", error_code, None
    op.generation += 1
    db.session.commit()


def release(op: PaymentOperation) -> None:
    """A transient failure: let the next identical request resume with the same key."""
    db.session.rollback()
    op = db.session.get(PaymentOperation, op.id)
    op.lease_expires_at = utcnow()
    db.session.commit()


def log_dedup(operation: str, **fields: Any) -> None:
    metrics.IDEMPOTENCY_DEDUP.inc()
    log.info("IDEMPOTENCY %s: returning existing %s", operation,
             ", ".join(f"{k}={v}" for k, v in fields.items()), extra={"operation": operation, **fields})


# -- the caller's Idempotency-Key header -------------------------------------------

CLIENT_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


def _fingerprint() -> str:
    body = request.get_json(silent=True)
    payload = canonical_json(body) if body is not None else request.get_data(as_text=True)
    return hashlib.sha256(f"{request.method} {request.path}\n{payload}".encode()).hexdigest()


def client_idempotent(view):
    """Honour an optional `Idempotency-Key`: same key and body → the stored
    response replayed; same key, other body → 422; first still running → 409.
    Failures are not stored, so a retry with the same key runs again."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        key = key.strip('"')  # the draft sends it as a quoted string
        if not CLIENT_KEY_RE.fullmatch(key):
            raise ApiError(400, "invalid_idempotency_key", "The Idempotency-Key header is not valid.",
                           "Send 1 to 255 printable ASCII characters, e.g. a UUID.")
        fingerprint = _fingerprint()
        now = utcnow()
        # Expired records, and in-flight ones whose worker died (older than an
        # operation's lease), no longer hold the key.
        abandoned = now - dt.timedelta(seconds=current_app.config["OPERATION_LEASE_SECONDS"])
        db.session.execute(delete(ClientIdempotencyKey).where(
            ClientIdempotencyKey.api_key_id == g.api_key_id, ClientIdempotencyKey.key == key,
            (ClientIdempotencyKey.expires_at <= now)
            | ((ClientIdempotencyKey.status == "in_flight") & (ClientIdempotencyKey.created_at <= abandoned))))
        record = ClientIdempotencyKey(
            api_key_id=g.api_key_id, key=key, fingerprint=fingerprint, status="in_flight",
            expires_at=now + dt.timedelta(hours=current_app.config["IDEMPOTENCY_KEY_TTL_HOURS"]))
        db.session.add(record)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return _replay(key, fingerprint)

        try:
            response = make_response(view(*args, **kwargs))
        except BaseException:
            db.session.rollback()
            db.session.execute(delete(ClientIdempotencyKey).where(ClientIdempotencyKey.id == record.id))
            db.session.commit()
            raise
        record = db.session.get(ClientIdempotencyKey, record.id)
        record.status, record.response_status = "completed", response.status_code
        record.response_body = response.get_data(as_text=True)
        db.session.commit()
        return response

    return wrapper


def _replay(key: str, fingerprint: str):
    existing = db.session.scalar(select(ClientIdempotencyKey).where(
        ClientIdempotencyKey.api_key_id == g.api_key_id, ClientIdempotencyKey.key == key))
    if existing is None:  # expired and purged between our insert and this read
        raise ApiError(409, "idempotency_key_in_flight", "A request with this Idempotency-Key is in progress.",
                       "Retry in a moment.", headers={"Retry-After": "1"})
    if existing.fingerprint != fingerprint:
        raise ApiError(422, "idempotency_key_reused",
                       "This Idempotency-Key was used with a different request.",
                       "Use a new Idempotency-Key for a different request.")
    if existing.status != "completed":
        raise ApiError(409, "idempotency_key_in_flight", "A request with this Idempotency-Key is in progress.",
                       "Retry in a moment.", headers={"Retry-After": "1"})
    log_dedup("client_key", status=existing.response_status)
    response = make_response(existing.response_body, existing.response_status)
    response.headers["Content-Type"] = "application/json"
    response.headers["Idempotent-Replayed"] = "true"
    return response
