"""Is this body a Stripe event signed with one of our webhook secrets?

stripe-python's `WebhookSignature.verify_header` checks the HMAC on the raw
bytes and refuses old timestamps; we add the check it lacks (timestamps from
the future) and parse with `json`: the handlers read plain dicts, so building
stripe-python's object tree (`construct_event`) would be wasted work.
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

import stripe

from ..json_input import MAX_DEPTH, too_deep


class VerificationError(Exception):
    """The request is not a verified Stripe event. `reason` is for the log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _header_timestamp(header: str) -> int | None:
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def verify_event(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance: int, now: float | None = None
) -> dict[str, Any]:
    """Return the event as a dict, or raise VerificationError."""
    if not header:
        raise VerificationError("missing Stripe-Signature header")
    if not secrets:
        raise VerificationError("no webhook secret configured")
    timestamp = _header_timestamp(header)
    # Stripe's header is ASCII; stripe-python's compare_digest raises TypeError on anything else.
    if timestamp is None or not header.isascii():
        raise VerificationError("malformed Stripe-Signature header")
    if timestamp > (time.time() if now is None else now) + tolerance:
        raise VerificationError("timestamp is in the future")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("body is not UTF-8") from None

    reason = "signature does not match"
    for secret in secrets:  # several during a rotation
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
            break
        except stripe.SignatureVerificationError as exc:
            # A matching signature with an old timestamp says more than a mismatch.
            if "tolerance" in str(exc):
                reason = "timestamp is too old"
    else:
        raise VerificationError(reason)

    # json.loads recurses once per level: a deep body, even a signed one, would raise
    # RecursionError. The reason names JSON, so the refusal is counted as malformed.
    if too_deep(payload):
        raise VerificationError(f"body is JSON nested deeper than {MAX_DEPTH} levels")
    try:
        event = json.loads(text)
    except ValueError:
        raise VerificationError("body is not JSON") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str) and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str) and 0 < len(event["type"]) <= 128
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict) and isinstance(event["data"].get("object"), dict)
    ):
        raise VerificationError("body is not a Stripe event")
    return event
