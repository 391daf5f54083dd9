"""PCI-safe mapping of Stripe (and breaker) errors to what a client may see.

Only the text in this module reaches a client. Stripe's own message can name
parameters, values, account details or keys, so it is never passed on, with one
exception: a card error's ``user_message``, which Stripe writes for end users, is
used for decline codes we have no text of our own for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import stripe

from ..observability.correlation import sanitize_correlation_id

SUPPORT_CONTACT_DEFAULT = "support@kamiyo.ai"


class CircuitOpenError(Exception):
    """Raised by our code instead of calling Stripe while the circuit breaker is open.

    `retry_after`: seconds until a call may go through again (the probe), when known."""

    def __init__(self, message: str = "circuit open", retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ErrorSpec(NamedTuple):
    error_code: str
    http_status: int
    message: str
    user_action: str


_TRY_OTHER_CARD = "Try a different card or contact your bank."
_CONTACT_SUPPORT = "Contact support and quote the support id."

# Our text per decline reason. The key is Stripe's decline_code (or the error code
# itself for errors like expired_card) and becomes our error_code.
CARD_ERRORS: dict[str, ErrorSpec] = {
    "insufficient_funds": ErrorSpec(
        "insufficient_funds", 402, "Your card has insufficient funds.", "Use a different card or contact your bank."
    ),
    "expired_card": ErrorSpec(
        "expired_card", 402, "Your card has expired.", "Check the expiry date or use a different card."
    ),
    # Never echo the code the customer typed: only ask them to check it.
    "incorrect_cvc": ErrorSpec(
        "incorrect_cvc",
        402,
        "Your card's security code is incorrect.",
        "Check the security code on the back of your card and try again.",
    ),
    "processing_error": ErrorSpec(
        "processing_error",
        402,
        "An error occurred while processing your card. Please try again.",
        "Try again in a few minutes.",
    ),
    "card_declined": ErrorSpec(
        "card_declined", 402, "Your card was declined. Please try a different payment method.", _TRY_OTHER_CARD
    ),
}
CARD_ERROR_GENERIC = ErrorSpec("card_error", 402, "Your card could not be charged.", _TRY_OTHER_CARD)

INVALID_REQUEST = ErrorSpec(
    "invalid_payment_request", 400, "The payment request was not accepted.", "Check the request and try again."
)
INTERNAL_ERROR = ErrorSpec(
    "internal_error",
    500,
    "Something went wrong on our side.",
    "Try again later; contact support with the support id if it persists.",
)
BREAKER_OPEN = ErrorSpec(
    "payment_service_unavailable",
    503,
    "Payments are temporarily unavailable. Please try again in a minute.",
    "Try again in a minute.",
)

# A Stripe param name we may show as a field name (never its value).
_PARAM_NAME = re.compile(r"[a-z_\[\]0-9]{1,64}", re.ASCII)
# A card user_message that looks like it carries a key or a long number is not shown.
_LEAKY = re.compile(r"(?:sk|rk|pk)_(?:test|live)_|whsec_|\d{6,}", re.ASCII)
_MAX_USER_MESSAGE = 200


def _card_spec(error: stripe.CardError) -> ErrorSpec:
    body = error.json_body if isinstance(error.json_body, dict) else {}
    found = body.get("error")
    details = found if isinstance(found, dict) else {}
    # The specific reason (decline_code) says more than the code (often just card_declined).
    for key in (details.get("decline_code"), error.code):
        if isinstance(key, str) and key in CARD_ERRORS:
            return CARD_ERRORS[key]
    text = error.user_message
    if (
        isinstance(text, str)
        and 0 < len(text.strip()) <= _MAX_USER_MESSAGE
        and text.isprintable()
        and not _LEAKY.search(text)
    ):
        return CARD_ERROR_GENERIC._replace(message=text.strip())
    return CARD_ERROR_GENERIC


def _invalid_request_spec(error: stripe.InvalidRequestError) -> ErrorSpec:
    param = error.param
    if isinstance(param, str) and _PARAM_NAME.fullmatch(param):
        return INVALID_REQUEST._replace(user_action=f"Check the field '{param}' and try again.")
    return INVALID_REQUEST


Rule = ErrorSpec | Callable[[Any], ErrorSpec]  # called with the class its entry names

# First isinstance match wins, so a subclass must come before its base. In
# stripe-python 16 every class here derives directly from StripeError (CardError
# and InvalidRequestError via StripeErrorWithParamCode): only the StripeError
# catch-all has to be last. tests/unit/test_errors.py checks the order.
ERROR_RULES: tuple[tuple[type[BaseException], Rule], ...] = (
    (CircuitOpenError, BREAKER_OPEN),
    (stripe.CardError, _card_spec),
    (stripe.InvalidRequestError, _invalid_request_spec),
    (
        stripe.IdempotencyError,
        ErrorSpec(
            "idempotency_conflict",
            409,
            "This request conflicts with an earlier request that used different details.",
            "Wait for the earlier request to finish, or start a new one.",
        ),
    ),
    (
        stripe.RateLimitError,
        ErrorSpec(
            "rate_limited", 503, "The payment service is busy. Please try again shortly.", "Try again in a few seconds."
        ),
    ),
    (
        stripe.APIConnectionError,
        ErrorSpec(
            "payment_service_unreachable",
            503,
            "The payment service could not be reached.",
            "Try again in a few minutes.",
        ),
    ),
    (
        stripe.APIError,
        ErrorSpec("payment_service_error", 502, "The payment service had a problem.", "Try again in a few minutes."),
    ),
    # Our credentials or account setup are wrong: say nothing about keys.
    (
        stripe.AuthenticationError,
        ErrorSpec("payment_configuration_error", 500, "Payments are not available right now.", _CONTACT_SUPPORT),
    ),
    (
        stripe.PermissionError,
        ErrorSpec("payment_configuration_error", 500, "Payments are not available right now.", _CONTACT_SUPPORT),
    ),
    (
        stripe.StripeError,
        ErrorSpec("payment_error", 502, "The payment could not be completed.", INTERNAL_ERROR.user_action),
    ),
)

# Worth retrying with the same idempotency key; everything else will fail again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


def error_spec(error: BaseException) -> ErrorSpec:
    for error_type, rule in ERROR_RULES:
        if isinstance(error, error_type):
            return rule if isinstance(rule, ErrorSpec) else rule(error)
    return INTERNAL_ERROR


def map_stripe_error(error: BaseException, request_id: str | None, support_contact: str | None = None) -> dict:
    """The client-safe description of ``error`` (plus the HTTP status to answer with)."""
    spec = error_spec(error)
    return {
        "error_code": spec.error_code,
        "message": spec.message,
        "user_action": spec.user_action,
        "support_id": sanitize_correlation_id(request_id),
        "support_contact": support_contact or SUPPORT_CONTACT_DEFAULT,
        "http_status": spec.http_status,
    }


# Decline codes a customer may be told (Stripe's list). Any other, and those Stripe asks not to
# show (lost_card, stolen_card, fraudulent, pickup_card, restricted_card, merchant_blacklist,
# security_violation...: telling them helps a card thief), is shown as generic_decline.
SAFE_DECLINE_CODES = frozenset(
    {
        "approve_with_id",
        "call_issuer",
        "card_not_supported",
        "card_velocity_exceeded",
        "currency_not_supported",
        "do_not_honor",
        "do_not_try_again",
        "duplicate_transaction",
        "expired_card",
        "generic_decline",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_pin",
        "incorrect_zip",
        "insufficient_funds",
        "invalid_account",
        "invalid_amount",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "issuer_not_available",
        "new_account_information_available",
        "no_action_taken",
        "not_permitted",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "pin_try_exceeded",
        "processing_error",
        "reenter_transaction",
        "service_not_allowed",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
        "try_again_later",
        "withdrawal_count_limit_exceeded",
    }
)
GENERIC_DECLINE = "generic_decline"


def safe_decline_code(error: BaseException) -> str | None:
    """A card error's decline_code as a customer may see it; None when Stripe gave none."""
    if not isinstance(error, stripe.CardError):
        return None
    body = error.json_body if isinstance(error.json_body, dict) else {}
    details = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = details.get("decline_code") if isinstance(details, dict) else None
    if code is None:
        return None
    return code if isinstance(code, str) and code in SAFE_DECLINE_CODES else GENERIC_DECLINE


def client_details(error: BaseException) -> dict[str, str]:
    """What a client may see of `error` beyond map_stripe_error's text (a safe decline_code)."""
    code = safe_decline_code(error)
    return {"decline_code": code} if code else {}


def is_card_error(error: BaseException) -> bool:
    return isinstance(error, stripe.CardError)


def is_resource_missing(error: BaseException) -> bool:
    """Stripe does not know an object the request names (a 404, or `resource_missing`)."""
    return isinstance(error, stripe.InvalidRequestError) and (
        error.http_status == 404 or error.code == "resource_missing"
    )


def missing_param(error: BaseException) -> str | None:
    """The parameter Stripe names for a missing object (None when it names none, as the local
    emulator does)."""
    param = getattr(error, "param", None)
    return param if isinstance(param, str) and _PARAM_NAME.fullmatch(param) else None


def is_replayed(error: BaseException) -> bool:
    """Stripe answered with the result it stored for this idempotency key (a 500 included):
    every retry with the key gets it again, for 24 hours. Not Stripe being down."""
    headers = getattr(error, "headers", None) or {}
    return any(
        name.lower() == "idempotent-replayed" and str(value).lower() == "true" for name, value in headers.items()
    )


def is_client_error(error: BaseException) -> bool:
    """An HTTP 4xx other than 429: the request itself was refused, and will be again.

    Looked at apart from the class: an answer without Stripe's error body (a proxy's page,
    an emulator's 404) becomes an APIError, the class of Stripe's own 5xx."""
    status = getattr(error, "http_status", None)
    return isinstance(status, int) and 400 <= status < 500 and status != 429


def is_transient(error: BaseException) -> bool:
    """Worth retrying with the same key; a stored result replayed never is, nor a 4xx."""
    return isinstance(error, TRANSIENT_ERRORS) and not is_replayed(error) and not is_client_error(error)
