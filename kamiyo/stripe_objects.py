"""Reading Stripe objects (plain dicts: API answers and webhook payloads) the same way everywhere."""

from __future__ import annotations

import datetime as dt
from typing import Any


def first_item(subscription: dict[str, Any]) -> dict[str, Any]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}


def subscription_period_end(subscription: dict[str, Any]) -> dt.datetime | None:
    # Since 2025 Stripe reports the period on the items; older versions on the subscription.
    value = subscription.get("current_period_end") or first_item(subscription).get("current_period_end")
    return dt.datetime.fromtimestamp(value, tz=dt.timezone.utc) if isinstance(value, int) else None
