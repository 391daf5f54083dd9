"""What of a verified event is kept: only what the handlers, the replay and the dashboard use.

Stripe sends whole objects: a charge carries the cardholder's name, email, address and
phone, the card's brand, last 4, expiry and fingerprint. None of it is read here, so
none of it is stored.

- An event of a type no handler takes is kept as ids and type only: its id, type,
  created, livemode, api_version, and its object's id and object type (what the
  dashboard lists and the version check compares).
- A handled event is kept whole but for the fields in STRIPPED, removed at any depth
  of its `data` (the object and its previous_attributes). The handlers get the same
  stripped event, so a replay of the stored payload does what the first delivery did.

An event with nothing to strip is stored as received, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from . import handlers

# Contact and payment details that no handler reads. The customer handler reads `email`
# and `name` of a customer object: those stay.
STRIPPED = frozenset(
    {
        "payment_method_details",
        "billing_details",
        "shipping",
        "address",
        "phone",
        # The same details under other names: a payment method's card (brand, last 4,
        # expiry, fingerprint), a customer's or a charge's card sources, an invoice's copy of
        # its customer's contact details, a payment intent's receipt address.
        "card",
        "source",
        "sources",
        "customer_address",
        "customer_email",
        "customer_name",
        "customer_phone",
        "customer_shipping",
        "receipt_email",
    }
)

# What an unhandled event keeps of itself and of its object.
_EVENT_IDS = ("id", "object", "type", "created", "livemode", "api_version")
_OBJECT_IDS = ("id", "object")


def ids_only(event: dict[str, Any]) -> dict[str, Any]:
    kept = {key: event[key] for key in _EVENT_IDS if key in event}
    obj = event["data"]["object"]
    kept["data"] = {"object": {key: obj[key] for key in _OBJECT_IDS if key in obj}}
    return kept


def _strip(value: Any) -> Any:
    """`value` without the STRIPPED keys at any depth; the very same object when none occurs."""
    if isinstance(value, dict):
        changed = False
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if key in STRIPPED:
                changed = True
                continue
            stripped = _strip(item)
            changed = changed or stripped is not item
            kept[key] = stripped
        return kept if changed else value
    if isinstance(value, list):
        items = [_strip(item) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


def stored_form(event: dict[str, Any], payload: str) -> tuple[dict[str, Any], str]:
    """The event as it is handled and stored, and its JSON text for `webhook_events.payload`."""
    if event["type"] not in handlers.HANDLERS:
        kept = ids_only(event)
        return kept, json.dumps(kept, separators=(",", ":"))
    data = _strip(event["data"])
    if data is event["data"]:
        return event, payload
    kept = {**event, "data": data}
    return kept, json.dumps(kept, separators=(",", ":"), ensure_ascii=False)
