"""The rule of every field the payments API takes, in one place: the views check input with
these, a refused field is answered with its rule's text, and the README quotes the texts
(tests/payments/test_actionable_errors.py checks that it does)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from ..control_chars import has_control
from ..ids import MAX_ID, MIN_ID, valid_id
from ..users import EMAIL_RE
from .queries import LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX

USER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
STRIPE_ID_RE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
PAYMENT_METHOD_RE = re.compile(r"^pm_[A-Za-z0-9_]{1,250}$")
TIER_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Stripe's subscription statuses (a filter with another one is a typo, not an empty list).
SUBSCRIPTION_STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)


class Field(NamedTuple):
    required: bool
    valid: Callable[[Any], bool]
    rule: str  # what a client is told, after "required: " or "optional: "

    @property
    def described(self) -> str:
        return f"{'required' if self.required else 'optional'}: {self.rule}"


def _matches(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and bool(pattern.fullmatch(value))


def _valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(EMAIL_RE.fullmatch(value))


def _valid_name(value: Any) -> bool:
    # Control characters have no place in a name (EMAIL_RE refuses them in an address); NUL
    # cannot even be stored in PostgreSQL text (refused here, before Stripe is called, not after).
    return value is None or (isinstance(value, str) and 0 < len(value) <= 256 and not has_control(value))


def _id_text(value: Any) -> bool:
    """A row id in a query string."""
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10 and valid_id(int(value))


def _optional(field: Field) -> Field:
    return field._replace(required=False)


ID_RULE = f"an integer from {MIN_ID} to {MAX_ID}"
USER_ID = Field(True, _matches(USER_ID_RE), "1 to 128 characters from A-Z a-z 0-9 _ . : @ -")
EMAIL = Field(True, _valid_email, "an email address of at most 254 characters")
STRIPE_CUSTOMER_ID = Field(
    False, _matches(STRIPE_ID_RE), "a Stripe customer id, 1 to 255 characters from A-Z a-z 0-9 _"
)
STATUS = Field(False, lambda v: v in SUBSCRIPTION_STATUSES, f"one of {', '.join(SUBSCRIPTION_STATUSES)}")

CUSTOMER_BODY = {
    "user_id": USER_ID,
    "email": EMAIL,
    "name": Field(False, _valid_name, "1 to 256 characters, no control characters (or null)"),
}
SUBSCRIPTION_BODY = {
    "customer_id": Field(True, valid_id, ID_RULE),
    "price_id": Field(True, _matches(STRIPE_ID_RE), "a Stripe price id, 1 to 255 characters from A-Z a-z 0-9 _"),
    "tier": Field(True, _matches(TIER_RE), "1 to 64 characters from A-Z a-z 0-9 _ -"),
    "payment_method": Field(
        False,
        lambda v: v is None or bool(isinstance(v, str) and PAYMENT_METHOD_RE.fullmatch(v)),
        "a PaymentMethod id, pm_ then 1 to 250 characters from A-Z a-z 0-9 _ (or null)",
    ),
}
PAGE_ARGS = {
    "limit": Field(
        False,
        lambda v: isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3 and 1 <= int(v) <= LIST_LIMIT_MAX,
        f"a whole number from 1 to {LIST_LIMIT_MAX} (default {LIST_LIMIT_DEFAULT})",
    ),
    "starting_after": Field(False, _id_text, f"the last id of the page before, {MIN_ID} to {MAX_ID}"),
}
CUSTOMER_FILTERS = {
    **PAGE_ARGS,
    "user_id": _optional(USER_ID),
    "email": _optional(EMAIL),
    "stripe_customer_id": STRIPE_CUSTOMER_ID,
}
CUSTOMER_SUBSCRIPTION_FILTERS = {**PAGE_ARGS, "status": STATUS}
SUBSCRIPTION_FILTERS = {
    **PAGE_ARGS,
    "status": STATUS,
    "customer_id": Field(False, _id_text, f"a customer id, {ID_RULE}"),
}

# Every rule, by where it applies, for the README (and one day the OpenAPI document).
ALL: dict[str, dict[str, Field]] = {
    "POST /customers": CUSTOMER_BODY,
    "POST /subscriptions": SUBSCRIPTION_BODY,
    "GET /customers": CUSTOMER_FILTERS,
    "GET /customers/<id>/subscriptions": CUSTOMER_SUBSCRIPTION_FILTERS,
    "GET /subscriptions": SUBSCRIPTION_FILTERS,
}
