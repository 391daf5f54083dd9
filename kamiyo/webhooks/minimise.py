"""What of a verified event is kept: only what the handlers, the replay and the dashboard use.

Stripe sends whole objects, and the same personal details come under ever more names: a
card's or a bank account's details in a payment method's type-specific block (`card`,
`sepa_debit`, `us_bank_account`, `link`, `paypal`, ...), billing and shipping contacts, a
customer's former email in `previous_attributes`, an invoice's tax ids and the bearer links
that open it. So what is kept is listed, not what is removed:

- An event of a type no handler takes is kept as ids and type only: its id, type,
  created, livemode, api_version, and its object's id and object type (what the
  dashboard lists and the version check compares).
- A handled event keeps, per object type (SCHEMAS), what its handler reads plus ids,
  object types, timestamps, amounts and statuses. A reference to another object keeps
  its id and object type; metadata keeps only the keys a handler reads.
  `previous_attributes` keeps the same but the contact fields (CONTACT), which the
  customer handler reads from the object only. A deleted customer keeps no contact fields
  (its handler reads only its id).
- A handled event that its handler ignored (a customer of another product on the same
  Stripe account) loses its contact fields too once handled (`ignored_payload`).

The handlers get the reduced event, so a replay of the stored payload does what the first
delivery did. An event with nothing to drop is stored as received, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from . import handlers

# A schema maps the keys kept to how their values are kept: KEEP keeps a scalar (a string,
# number, boolean or null) and drops an object or a list; a nested schema applies to an object
# (and to each object of a list), and keeps a string as it is (an id, not expanded).
KEEP = True
Schema = dict[str, Any]

# The details of a person: kept only on a customer of ours, from the object itself.
CONTACT = ("email", "name")

_BASE: Schema = {"id": KEEP, "object": KEEP, "created": KEEP, "livemode": KEEP, "status": KEEP}
# Another object, by reference: its id and object type, whatever was expanded.
_REF: Schema = {"id": KEEP, "object": KEEP}


def _list_of(item: Schema) -> Schema:
    """A Stripe list object (`{"object": "list", "data": [...]}`)."""
    return {"object": KEEP, "data": item, "has_more": KEEP, "total_count": KEEP, "url": KEEP}


def _metadata(*keys: str) -> Schema:
    return dict.fromkeys(keys, KEEP)


_PRICE: Schema = {**_BASE, "metadata": _metadata("tier"), "product": _REF, "currency": KEEP, "unit_amount": KEEP}
_SUBSCRIPTION_ITEM: Schema = {
    **_BASE,
    "price": _PRICE,
    "plan": _PRICE,
    "quantity": KEEP,
    "subscription": KEEP,
    "current_period_start": KEEP,
    "current_period_end": KEEP,
}
_CUSTOMER: Schema = {**_BASE, "deleted": KEEP, "email": KEEP, "name": KEEP, "metadata": _metadata("kamiyo_user_id")}
_SUBSCRIPTION: Schema = {
    **_BASE,
    "customer": _REF,
    "metadata": _metadata("kamiyo_user_id", "kamiyo_customer_id", "kamiyo_tier", "tier"),
    "items": _list_of(_SUBSCRIPTION_ITEM),
    "plan": _PRICE,
    "latest_invoice": _REF,
    "current_period_start": KEEP,
    "current_period_end": KEEP,
    "start_date": KEEP,
    "cancel_at": KEEP,
    "cancel_at_period_end": KEEP,
    "canceled_at": KEEP,
    "ended_at": KEEP,
    "trial_start": KEEP,
    "trial_end": KEEP,
}
_INVOICE: Schema = {
    **_BASE,
    "customer": _REF,
    "subscription": _REF,
    "payment_intent": _REF,
    "amount_due": KEEP,
    "amount_paid": KEEP,
    "amount_remaining": KEEP,
    "currency": KEEP,
    "paid": KEEP,
    "attempted": KEEP,
    "attempt_count": KEEP,
    "billing_reason": KEEP,
    "period_start": KEEP,
    "period_end": KEEP,
}
_PAYMENT_ERROR: Schema = {
    "type": KEEP,
    "code": KEEP,
    "decline_code": KEEP,
    "param": KEEP,
    "charge": _REF,
    # A payment method keeps its id and object type: its type-specific block (`card`,
    # `sepa_debit`, `us_bank_account`, `link`, `paypal`, ...) is the payer's details.
    "payment_method": _REF,
    "payment_method_type": KEEP,
}
_PAYMENT_INTENT: Schema = {
    **_BASE,
    "customer": _REF,
    "invoice": _REF,
    "payment_method": _REF,
    "latest_charge": _REF,
    "charges": _list_of({**_REF, "status": KEEP, "paid": KEEP}),
    "amount": KEEP,
    "amount_received": KEEP,
    "amount_capturable": KEEP,
    "currency": KEEP,
    "canceled_at": KEEP,
    "cancellation_reason": KEEP,
    "last_payment_error": _PAYMENT_ERROR,
}
_DELETED_CUSTOMER: Schema = {key: spec for key, spec in _CUSTOMER.items() if key not in CONTACT}

# The object schema of each handled event type (tests/security check that every handled type has one).
SCHEMAS: dict[str, Schema] = {
    "customer.created": _CUSTOMER,
    "customer.updated": _CUSTOMER,
    "customer.deleted": _DELETED_CUSTOMER,
    **dict.fromkeys(
        ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"),
        _SUBSCRIPTION,
    ),
    **dict.fromkeys(("invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed"), _INVOICE),
    **dict.fromkeys(("payment_intent.succeeded", "payment_intent.payment_failed"), _PAYMENT_INTENT),
}

# What an event keeps of itself, and an unhandled one of its object.
_EVENT: Schema = {
    "id": KEEP,
    "object": KEEP,
    "type": KEEP,
    "created": KEEP,
    "livemode": KEEP,
    "api_version": KEEP,
    "pending_webhooks": KEEP,
    "request": {"id": KEEP, "idempotency_key": KEEP},
}
_EVENT_IDS = ("id", "object", "type", "created", "livemode", "api_version")


def _without_contact(schema: Schema) -> Schema:
    return {key: spec for key, spec in schema.items() if key not in CONTACT}


def _reduce(value: Any, schema: Schema) -> Any:
    """`value` with only what `schema` keeps."""
    if isinstance(value, dict):
        kept: dict[str, Any] = {}
        for key, spec in schema.items():
            if key not in value:
                continue
            item = value[key]
            if spec is KEEP:
                if not isinstance(item, dict | list):
                    kept[key] = item
            else:
                kept[key] = _reduce(item, spec)
        return kept
    if isinstance(value, list):
        return [_reduce(item, schema) for item in value]
    return value  # an id where the object could have been expanded, or null


def ids_only(event: dict[str, Any]) -> dict[str, Any]:
    kept = {key: event[key] for key in _EVENT_IDS if key in event}
    kept["data"] = {"object": _reduce(event["data"]["object"], _REF)}
    return kept


def _kept(event: dict[str, Any], schema: Schema) -> dict[str, Any]:
    kept = _reduce(event, _EVENT)
    data = event["data"]
    kept["data"] = {"object": _reduce(data["object"], schema)}
    if "previous_attributes" in data:
        kept["data"]["previous_attributes"] = _reduce(data["previous_attributes"], _without_contact(schema))
    return kept


def _dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def stored_form(event: dict[str, Any], payload: str) -> tuple[dict[str, Any], str]:
    """The event as it is handled and stored, and its JSON text for `webhook_events.payload`."""
    if event["type"] not in handlers.HANDLERS:
        kept = ids_only(event)
        return kept, _dumps(kept)
    schema = SCHEMAS.get(event["type"])
    kept = _kept(event, schema) if schema is not None else ids_only(event)
    if kept == event:
        return event, payload
    return kept, _dumps(kept)


def ignored_payload(event: dict[str, Any]) -> str | None:
    """The stored form of a handled event that its handler ignored: nothing of it was used, so
    its contact fields go too. None when it has none."""
    schema = SCHEMAS.get(event["type"])
    if schema is None:
        return None
    kept = _kept(event, _without_contact(schema))
    return None if kept == event else _dumps(kept)
