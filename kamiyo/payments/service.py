"""The payments use cases, as the views and commands call them."""

from __future__ import annotations

from .customers import create_customer, get_customer
from .operations import Result
from .reconcile import reconcile_customers, reconcile_subscriptions
from .subscriptions import cancel_subscription, create_subscription, get_subscription

__all__ = [
    "Result",
    "cancel_subscription",
    "create_customer",
    "create_subscription",
    "get_customer",
    "get_subscription",
    "reconcile_customers",
    "reconcile_subscriptions",
]
