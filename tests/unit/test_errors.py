"""Stripe error mapping: right code and status, and no Stripe text reaches a client."""

from __future__ import annotations

import json
import re

import pytest
import stripe

from kamiyo.stripe_gateway.errors import (
    CARD_ERRORS,
    ERROR_RULES,
    SUPPORT_CONTACT_DEFAULT,
    CircuitOpenError,
    is_transient,
    map_stripe_error,
)

SECRET = "SECRETMSG sk_test_123"
INJECTED_ID = "'; DROP TABLE users; --"
KEYS = {"error_code", "message", "user_action", "support_id", "support_contact", "http_status"}


def stripe_body(error_type: str, **details) -> dict:
    return {"error": {"type": error_type, "message": f"raw {SECRET}", **details}}


def make(cls, error_type: str, status: int, code: str | None = None, **details):
    """A stripe-python exception built the way the library builds one from a response."""
    body = stripe_body(error_type, code=code, **details)
    return cls(
        f"raw stripe text {SECRET}",
        http_body=json.dumps(body),
        http_status=status,
        json_body=body,
        headers={"request-id": "req_SECRETMSG"},
        code=code,
    )


def card(code: str, decline_code: str | None = None, message: str | None = f"raw {SECRET}"):
    body = stripe_body("card_error", code=code, decline_code=decline_code, param="number")
    return stripe.CardError(message, "number", code, json.dumps(body), 402, body, {"request-id": "req_x"})


def invalid(param: str | None):
    body = stripe_body("invalid_request_error", param=param, code="parameter_invalid")
    return stripe.InvalidRequestError(
        f"Invalid value {SECRET} for {param}", param, "parameter_invalid", json.dumps(body), 400, body
    )


class OtherStripeError(stripe.StripeError):
    """Stands in for any Stripe error class this module does not know (yet)."""


CASES = [
    pytest.param(card("card_declined", "insufficient_funds"), "insufficient_funds", 402, id="card-insufficient"),
    pytest.param(card("insufficient_funds"), "insufficient_funds", 402, id="card-insufficient-as-code"),
    pytest.param(card("expired_card"), "expired_card", 402, id="card-expired"),
    pytest.param(card("incorrect_cvc"), "incorrect_cvc", 402, id="card-cvc"),
    pytest.param(card("processing_error"), "processing_error", 402, id="card-processing"),
    pytest.param(card("card_declined"), "card_declined", 402, id="card-declined"),
    pytest.param(card("card_declined", "do_not_honor"), "card_declined", 402, id="card-unknown-decline"),
    pytest.param(card("incorrect_number", None, f"leaky {SECRET}"), "card_error", 402, id="card-leaky-user-message"),
    pytest.param(card("incorrect_number", None, None), "card_error", 402, id="card-no-message"),
    pytest.param(make(stripe.RateLimitError, "rate_limit_error", 429, "rate_limit"), "rate_limited", 503, id="rate-limit"),
    pytest.param(stripe.APIConnectionError(f"connect failed {SECRET}", should_retry=True),
                 "payment_service_unreachable", 503, id="connection"),
    pytest.param(make(stripe.APIError, "api_error", 500), "payment_service_error", 502, id="api"),
    pytest.param(make(stripe.AuthenticationError, "invalid_request_error", 401),
                 "payment_configuration_error", 500, id="authentication"),
    pytest.param(make(stripe.PermissionError, "invalid_request_error", 403),
                 "payment_configuration_error", 500, id="permission"),
    pytest.param(invalid("customer"), "invalid_payment_request", 400, id="invalid-request"),
    pytest.param(invalid(f"x{SECRET}"), "invalid_payment_request", 400, id="invalid-request-bad-param"),
    pytest.param(invalid(None), "invalid_payment_request", 400, id="invalid-request-no-param"),
    pytest.param(make(stripe.IdempotencyError, "idempotency_error", 400), "idempotency_conflict", 409, id="idempotency"),
    pytest.param(CircuitOpenError(SECRET), "payment_service_unavailable", 503, id="circuit-open"),
    pytest.param(make(OtherStripeError, "api_error", 500), "payment_error", 502, id="other-stripe"),
    pytest.param(make(stripe.StripeError, "api_error", 500), "payment_error", 502, id="base-stripe"),
    pytest.param(ValueError(SECRET), "internal_error", 500, id="not-stripe"),
]


@pytest.mark.parametrize(("error", "code", "status"), CASES)
def test_maps_code_and_status_without_leaking_stripe_text(error, code, status):
    mapped = map_stripe_error(error, INJECTED_ID)

    assert set(mapped) == KEYS
    assert mapped["error_code"] == code
    assert mapped["http_status"] == status
    assert mapped["support_id"] == "DROPTABLEusers--"
    assert mapped["support_contact"] == SUPPORT_CONTACT_DEFAULT
    assert all(isinstance(mapped[key], str) and mapped[key] for key in KEYS - {"http_status"})
    dumped = json.dumps(mapped)
    for marker in ("SECRETMSG", "sk_test_123", "raw", "req_"):
        assert marker not in dumped


# Written out, not read from CARD_ERRORS: a changed text must fail here.
DECLINES = {
    "insufficient_funds": ("Your card has insufficient funds.", "Use a different card or contact your bank."),
    "expired_card": ("Your card has expired.", "Check the expiry date or use a different card."),
    "incorrect_cvc": ("Your card's security code is incorrect.",
                      "Check the security code on the back of your card and try again."),
    "processing_error": ("An error occurred while processing your card. Please try again.",
                         "Try again in a few minutes."),
    "card_declined": ("Your card was declined. Please try a different payment method.",
                      "Try a different card or contact your bank."),
}


@pytest.mark.parametrize("decline_code", sorted(DECLINES))
def test_known_decline_codes_use_our_text(decline_code):
    mapped = map_stripe_error(card("card_declined", decline_code), "req_12345678")
    assert (mapped["error_code"], mapped["http_status"], mapped["message"], mapped["user_action"]) == (
        decline_code, 402, *DECLINES[decline_code])


def test_every_decline_code_we_know_is_pinned_above():
    assert set(CARD_ERRORS) == set(DECLINES)


def test_seed_card_declined_text():
    mapped = map_stripe_error(card("card_declined"), None)
    assert mapped["message"] == "Your card was declined. Please try a different payment method."
    assert mapped["user_action"] == "Try a different card or contact your bank."


def test_our_text_wins_over_stripe_user_message_for_known_codes():
    mapped = map_stripe_error(card("card_declined", "insufficient_funds", "Stripe says no."), None)
    assert mapped["message"] == "Your card has insufficient funds."


def test_stripe_user_message_is_used_only_for_unknown_card_codes():
    mapped = map_stripe_error(card("incorrect_number", None, "Your card number is incorrect."), None)
    assert mapped["error_code"] == "card_error"
    assert mapped["message"] == "Your card number is incorrect."


def test_cvc_error_never_echoes_the_code():
    error = stripe.CardError("Your card's security code 737 is incorrect.", "cvc", "incorrect_cvc", http_status=402)
    mapped = map_stripe_error(error, "request-id")  # a random support id may contain "737" itself
    assert "737" not in json.dumps(mapped)
    assert "security code" in mapped["user_action"]


def test_card_user_message_with_a_long_number_is_not_shown():
    error = stripe.CardError("Card 4242424242424242 refused", "number", "incorrect_number", http_status=402)
    assert "4242" not in json.dumps(map_stripe_error(error, "request-id"))


def test_invalid_request_names_a_safe_param_only():
    assert "'customer'" in map_stripe_error(invalid("customer"), None)["user_action"]
    assert "items[0][price]" in map_stripe_error(invalid("items[0][price]"), None)["user_action"]
    for bad in ("Customer", "email'; DROP", "a\nb", "x" * 65, "émail"):
        mapped = map_stripe_error(invalid(bad), None)
        assert mapped["user_action"] == "Check the request and try again."


def test_configuration_errors_do_not_mention_keys():
    for cls in (stripe.AuthenticationError, stripe.PermissionError):
        mapped = map_stripe_error(make(cls, "invalid_request_error", 401), "req_12345678")
        text = (mapped["message"] + mapped["user_action"]).lower()
        assert "key" not in text and "support id" in text


def test_support_contact_can_be_overridden():
    mapped = map_stripe_error(make(stripe.APIError, "api_error", 500), None, support_contact="help@example.com")
    assert mapped["support_contact"] == "help@example.com"
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,64}", mapped["support_id"])


def test_builtin_permission_error_is_not_a_stripe_permission_error():
    assert map_stripe_error(PermissionError(SECRET), None)["error_code"] == "internal_error"


def test_rules_list_subclasses_before_their_bases():
    types = [error_type for error_type, _ in ERROR_RULES]
    for index, earlier in enumerate(types):
        for later in types[index + 1:]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier.__name__}"
    assert types[-1] is stripe.StripeError


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (stripe.APIConnectionError("x"), True),
        (stripe.RateLimitError("x"), True),
        (stripe.APIError("x"), True),
        (stripe.APIError("x", http_status=500), True),
        (stripe.APIError("x", http_status=503), True),
        # A 4xx whose body is not Stripe's (a proxy's or an emulator's page) is still final.
        (stripe.APIError("x", http_status=404), False),
        (stripe.APIError("x", http_status=400), False),
        (stripe.RateLimitError("x", http_status=429), True),
        (card("card_declined"), False),
        (invalid("customer"), False),
        (stripe.AuthenticationError("x"), False),
        (stripe.PermissionError("x"), False),
        (stripe.IdempotencyError("x"), False),
        (stripe.StripeError("x"), False),
        (CircuitOpenError(), False),
        (ConnectionError("x"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_is_transient(error, expected):
    assert is_transient(error) is expected
