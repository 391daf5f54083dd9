"""Is this body a Stripe event signed with one of our webhook secrets?

We parse the `Stripe-Signature` header strictly and own the time window (old
and future timestamps alike); stripe-python's `WebhookSignature.verify_header`
checks the HMAC. The body is parsed with `json`: the handlers read plain dicts,
so building stripe-python's object tree (`construct_event`) would be wasted work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from ..json_input import MAX_DEPTH, too_deep
from ..stripe_gateway.library import signature_matches

Kind = Literal["missing_header", "malformed_header", "bad_signature", "too_old", "too_new", "not_json", "not_event"]
# A signed body that is not an event is a malformed delivery; the rest fail the signature.
MALFORMED_BODY: frozenset[Kind] = frozenset({"not_json", "not_event"})


class VerificationError(Exception):
    """The request is not a verified Stripe event. `kind` is for metrics, `reason` for the log only."""

    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _header_timestamp(header: str) -> int:
    """The one `t=` of a header in Stripe's exact form, or VerificationError.

    stripe-python reads the first `t=` and does not strip spaces; refusing
    duplicates and whitespace means its reading and ours are always the same.
    """
    # Stripe's header is ASCII; stripe-python's compare_digest raises TypeError on anything else.
    if not header.isascii():
        raise VerificationError("malformed_header", "malformed Stripe-Signature header")
    timestamps, signatures = [], 0
    for item in header.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key or not value or item != "".join(item.split()):
            raise VerificationError("malformed_header", "malformed Stripe-Signature header")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures += 1
    if len(timestamps) != 1 or not timestamps[0].isdigit() or not signatures:
        raise VerificationError("malformed_header", "malformed Stripe-Signature header")
    return int(timestamps[0])


def verify_event(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance: int, now: float | None = None
) -> dict[str, Any]:
    """Return the event as a dict, or raise VerificationError."""
    if not header:
        raise VerificationError("missing_header", "missing Stripe-Signature header")
    if not secrets:
        raise VerificationError("bad_signature", "no webhook secret configured")
    timestamp = _header_timestamp(header)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("not_json", "body is not UTF-8") from None

    # Several secrets during a rotation. The window is checked below, on the timestamp we parsed.
    if not any(signature_matches(text, header, secret) for secret in secrets):
        raise VerificationError("bad_signature", "signature does not match")

    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise VerificationError("too_old", "timestamp is too old")
    if timestamp > current + tolerance:
        raise VerificationError("too_new", "timestamp is in the future")

    # json.loads recurses once per level: a deep body, even a signed one, would raise RecursionError.
    if too_deep(payload):
        raise VerificationError("not_json", f"body is JSON nested deeper than {MAX_DEPTH} levels")
    try:
        event = json.loads(text)
    except ValueError:
        raise VerificationError("not_json", "body is not JSON") from None
    if not (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and 0 < len(event["id"]) <= 255
        and isinstance(event.get("type"), str)
        and 0 < len(event["type"]) <= 128
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    ):
        raise VerificationError("not_event", "body is not a Stripe event")
    return event
