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


EMAIL_MAX = 254
NAME_MAX = 256


class Field(NamedTuple):
    required: bool
    valid: Callable[[Any], bool]
    rule: str  # what a client is told, after "required: " or "optional: "
    # The same rule as a JSON Schema, for the OpenAPI document (kamiyo/payments/openapi.py),
    # built from the patterns and limits `valid` uses.
    schema: dict[str, Any]

    @property
    def described(self) -> str:
        return f"{'required' if self.required else 'optional'}: {self.rule}"


def _matches(pattern: re.Pattern) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, str) and bool(pattern.fullmatch(value))


def _valid_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= EMAIL_MAX and bool(EMAIL_RE.fullmatch(value))


def _valid_name(value: Any) -> bool:
    # Control characters have no place in a name (EMAIL_RE refuses them in an address); NUL
    # cannot even be stored in PostgreSQL text (refused here, before Stripe is called, not after).
    return value is None or (isinstance(value, str) and 0 < len(value) <= NAME_MAX and not has_control(value))


def _id_text(value: Any) -> bool:
    """A row id in a query string."""
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10 and valid_id(int(value))


def _optional(field: Field) -> Field:
    return field._replace(required=False)


def _pattern(pattern: re.Pattern) -> dict[str, Any]:
    return {"type": "string", "pattern": pattern.pattern}


ID_RULE = f"an integer from {MIN_ID} to {MAX_ID}"
ID_SCHEMA = {"type": "integer", "minimum": MIN_ID, "maximum": MAX_ID}
USER_ID = Field(True, _matches(USER_ID_RE), "1 to 128 characters from A-Z a-z 0-9 _ . : @ -", _pattern(USER_ID_RE))
EMAIL = Field(
    True,
    _valid_email,
    f"an email address of at most {EMAIL_MAX} characters",
    {**_pattern(EMAIL_RE), "format": "email", "maxLength": EMAIL_MAX},
)
STRIPE_CUSTOMER_ID = Field(
    False,
    _matches(STRIPE_ID_RE),
    "a Stripe customer id, 1 to 255 characters from A-Z a-z 0-9 _",
    _pattern(STRIPE_ID_RE),
)
STATUS = Field(
    False,
    lambda v: v in SUBSCRIPTION_STATUSES,
    f"one of {', '.join(SUBSCRIPTION_STATUSES)}",
    {"type": "string", "enum": list(SUBSCRIPTION_STATUSES)},
)

CUSTOMER_BODY = {
    "user_id": USER_ID,
    "email": EMAIL,
    "name": Field(
        False,
        _valid_name,
        f"1 to {NAME_MAX} characters, no control characters (or null)",
        {"type": ["string", "null"], "minLength": 1, "maxLength": NAME_MAX},
    ),
}
SUBSCRIPTION_BODY = {
    "customer_id": Field(True, valid_id, ID_RULE, ID_SCHEMA),
    "price_id": Field(
        True,
        _matches(STRIPE_ID_RE),
        "a Stripe price id, 1 to 255 characters from A-Z a-z 0-9 _",
        _pattern(STRIPE_ID_RE),
    ),
    "tier": Field(True, _matches(TIER_RE), "1 to 64 characters from A-Z a-z 0-9 _ -", _pattern(TIER_RE)),
    "payment_method": Field(
        False,
        lambda v: v is None or bool(isinstance(v, str) and PAYMENT_METHOD_RE.fullmatch(v)),
        "a PaymentMethod id, pm_ then 1 to 250 characters from A-Z a-z 0-9 _ (or null)",
        {"type": ["string", "null"], "pattern": PAYMENT_METHOD_RE.pattern},
    ),
}
PAGE_ARGS = {
    "limit": Field(
        False,
        lambda v: isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3 and 1 <= int(v) <= LIST_LIMIT_MAX,
        f"a whole number from 1 to {LIST_LIMIT_MAX} (default {LIST_LIMIT_DEFAULT})",
        {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": LIST_LIMIT_DEFAULT},
    ),
    "starting_after": Field(False, _id_text, f"the last id of the page before, {MIN_ID} to {MAX_ID}", ID_SCHEMA),
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
    "customer_id": Field(False, _id_text, f"a customer id, {ID_RULE}", ID_SCHEMA),
}

# Every rule, by where it applies, for the README and the OpenAPI document.
ALL: dict[str, dict[str, Field]] = {
    "POST /customers": CUSTOMER_BODY,
    "POST /subscriptions": SUBSCRIPTION_BODY,
    "GET /customers": CUSTOMER_FILTERS,
    "GET /customers/<id>/subscriptions": CUSTOMER_SUBSCRIPTION_FILTERS,
    "GET /subscriptions": SUBSCRIPTION_FILTERS,
}
