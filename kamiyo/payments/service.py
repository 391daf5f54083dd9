"""The payments use cases, as the views and commands call them."""

from __future__ import annotations

from .customers import create_customer, get_customer
from .operations import Result
from .queries import ListPage, customers_page, subscriptions_page
from .reconcile import reconcile_customers, reconcile_subscriptions
from .subscriptions import cancel_subscription, create_subscription, get_subscription

__all__ = [
    "ListPage",
    "Result",
    "cancel_subscription",
    "create_customer",
    "create_subscription",
    "get_customer",
    "get_subscription",
    "list_customer_subscriptions",
    "list_customers",
    "list_subscriptions",
    "reconcile_customers",
    "reconcile_subscriptions",
]


# The views list through the service; the reads themselves are the shared query layer's.
list_customers = customers_page
list_subscriptions = subscriptions_page


def list_customer_subscriptions(
    customer_id: int, limit: int, starting_after: int | None = None, status: str | None = None
) -> ListPage:
    get_customer(customer_id)  # 404 for an unknown customer, not an empty list
    return subscriptions_page(limit, starting_after, customer_id=customer_id, status=status)
