"""Idempotency keys: the Stripe key of an operation, and whose request holds it.

Two layers guard against a second charge. The database: an operation row is
claimed (unique `scope`) before Stripe is called, and run as fenced phases
(phases.py). Stripe: a deterministic key derived from the claimed operation's
stored parameters and generation, the same on every attempt and after a
restart. Nothing here commits: phases.py owns the operation's commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Any

from flask import g, has_request_context

from . import metrics

log = logging.getLogger(__name__)


def canonical_json(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_key(operation: str, user_id: str, params_json: str, generation: int) -> str:
    """32 hex characters of SHA-256 over the operation: no date, no raw PII."""
    with metrics.IDEMPOTENCY_KEY_SECONDS.time():
        material = "\x1f".join((operation, user_id, params_json, str(generation)))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def owner_token() -> str:
    """This request's owner token: the operation it claims, and the caller's Idempotency-Key
    it holds, carry the same one (client_keys.py asks whether the operation is still ours)."""
    if not has_request_context():
        return secrets.token_hex(16)
    token = g.get("owner_token")
    if token is None:
        token = g.owner_token = secrets.token_hex(16)
    return token


def log_dedup(operation: str, **fields: Any) -> None:
    metrics.IDEMPOTENCY_DEDUP.inc()
    log.info(
        "IDEMPOTENCY %s: returning existing %s",
        operation,
        ", ".join(f"{k}={v}" for k, v in fields.items()),
        extra={"operation": operation, **fields},
    )
