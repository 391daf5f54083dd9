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


def list_customers(
    limit: int,
    starting_after: int | None = None,
    user_id: str | None = None,
    email: str | None = None,
    stripe_customer_id: str | None = None,
) -> ListPage:
    return customers_page(limit, starting_after, user_id, email, stripe_customer_id)


def list_subscriptions(
    limit: int, starting_after: int | None = None, customer_id: int | None = None, status: str | None = None
) -> ListPage:
    return subscriptions_page(limit, starting_after, customer_id=customer_id, status=status)


def list_customer_subscriptions(
    customer_id: int, limit: int, starting_after: int | None = None, status: str | None = None
) -> ListPage:
    get_customer(customer_id)  # 404 for an unknown customer, not an empty list
    return subscriptions_page(limit, starting_after, customer_id=customer_id, status=status)
