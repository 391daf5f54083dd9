"""Hand-made Stripe events, signed the way Stripe signs them."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import stripe

from tests.support import TEST_SECRETS

SECRET = TEST_SECRETS["STRIPE_WEBHOOK_SECRET"]
URL = "/api/v1/webhooks/stripe"
_ids = itertools.count(1)


def make_event(event_type: str, obj: dict[str, Any], *, created: int | None = None,
               event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{time.time_ns()}_{next(_ids)}",
        "object": "event",
        "type": event_type,
        "api_version": "2026-10-28.endive",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "data": {"object": obj},
    }


def sign(body: bytes | str, secret: str = SECRET, timestamp: int | None = None) -> str:
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return stripe.WebhookSignature.generate_signature_header(
        text, secret, timestamp=int(time.time()) if timestamp is None else timestamp)


def signed(event: dict[str, Any], secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def post(client, event: dict[str, Any], **kwargs):
    body, headers = signed(event, **kwargs)
    return client.post(URL, data=body, headers=headers)


def customer(cus_id: str, user_id: str | None = "user-1", email: str = "ada@example.com", **extra) -> dict:
    return {"id": cus_id, "object": "customer", "email": email, "name": "Ada",
            "metadata": {"kamiyo_user_id": user_id} if user_id else {}, **extra}


def subscription(sub_id: str, cus_id: str, status: str = "active", price: str = "price_pro",
                 user_id: str | None = "user-1", period_end: int = 1_900_000_000) -> dict:
    return {"id": sub_id, "object": "subscription", "customer": cus_id, "status": status,
            "metadata": {"kamiyo_user_id": user_id} if user_id else {},
            "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": price, "metadata": {"tier": "pro"}},
                                                  "current_period_end": period_end}]}}
