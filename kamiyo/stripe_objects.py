"""Reading Stripe objects (plain dicts: API answers and webhook payloads) the same way everywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app


def reference_id(value: Any) -> str | None:
    """A Stripe reference: either the id itself or the expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}


def subscription_period_end(subscription: dict[str, Any]) -> dt.datetime | None:
    # Since 2025 Stripe reports the period on the items; older versions on the subscription.
    value = subscription.get("current_period_end") or first_item(subscription).get("current_period_end")
    return dt.datetime.fromtimestamp(value, tz=dt.UTC) if isinstance(value, int) else None


def price_id(subscription: dict[str, Any]) -> str | None:
    """The price of a subscription's first item (a plan, on older versions and the emulator)."""
    item = first_item(subscription)
    for candidate in (item.get("price"), item.get("plan"), subscription.get("plan")):
        if isinstance(candidate, dict) and candidate.get("id"):
            return str(candidate["id"])
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def fetch_stripe_object(kind: str, object_id: str) -> dict[str, Any]:
    """The object as Stripe holds it now, through the app's one Stripe gateway (registered by
    the payments feature), so that the call is retried, breaker-guarded and recorded."""
    return current_app.extensions["stripe_gateway"].retrieve(kind, object_id)


def list_stripe_subscriptions(customer_id: str) -> list[dict[str, Any]]:
    """Every subscription of a customer, cancelled ones included, through the gateway (one
    attempt: callers make do without, and must not hold a webhook's answer up for long)."""
    return list(current_app.extensions["stripe_gateway"].iter_subscriptions(customer=customer_id, retry=False))
