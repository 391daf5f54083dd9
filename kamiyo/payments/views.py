"""The payments JSON API: parse and validate, call the service, serialise."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from ..api_keys import request_key, require_scope
from ..bearer import bearer_token
from ..card_data import contains_card_number
from ..health import health_checks
from ..http_errors import ApiError
from ..json_input import MAX_DEPTH, too_deep
from ..models import Customer, Subscription
from ..scopes import OPS_READ, PAYMENTS_READ, PAYMENTS_WRITE
from ..stripe_gateway.gateway import get_gateway
from . import fields, service
from .client_keys import client_idempotent
from .fields import Field
from .queries import LIST_LIMIT_DEFAULT

bp = Blueprint("payments", __name__, url_prefix="/api/v1/payments")


CARD_SCAN_MAX = 1024  # characters: more than any text field takes (name: 256)


# -- input ------------------------------------------------------------------------


@bp.before_request
def _refuse_deep_json() -> None:
    # Before any view or decorator parses the body (the Idempotency-Key fingerprint does):
    # json recurses once per level, and a deep enough body raises RecursionError.
    if request.is_json and too_deep(request.get_data(cache=True)):
        raise ApiError(
            400,
            "invalid_json",
            f"The request body is nested deeper than {MAX_DEPTH} levels.",
            f"Send a JSON body nested at most {MAX_DEPTH} levels deep.",
        )


def _refuse_card_data(body: dict[str, Any]) -> None:
    # Card details go to Stripe from the browser, never through us: a card number typed into
    # a text field must not be stored, logged or forwarded. The value is never echoed back.
    # Values longer than any field allows are refused by the format checks anyway (never stored
    # or echoed); scanning a megabyte of "1 1 1 ..." for cards would take seconds.
    found = [
        name
        for name, value in body.items()
        if isinstance(value, str) and len(value) <= CARD_SCAN_MAX and contains_card_number(value)
    ]
    if found:
        raise ApiError(
            400,
            "card_data_not_allowed",
            "Card numbers are not accepted in these fields.",
            "Remove the card number: card details are entered in Stripe's own form.",
            fields=found,
        )


def _json_body(allowed: set[str]) -> dict[str, Any]:
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "The request body must be JSON.", "Send 'Content-Type: application/json'."
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.", "Send a JSON object.")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(
            400,
            "unknown_fields",
            "The request has fields this endpoint does not take.",
            f"Remove them; allowed: {', '.join(sorted(allowed))}.",
            fields=unknown,
        )
    _refuse_card_data(body)  # before the format checks: "4242-4242-4242-4242" is a valid user id
    return body


def _check(body: dict, rules: dict[str, Field]) -> None:
    bad = sorted(
        name
        for name, field in rules.items()
        if (name in body and not field.valid(body[name])) or (field.required and name not in body)
    )
    if bad:
        raise ApiError(
            400,
            "validation_failed",
            "Some fields are missing or invalid.",
            "Fix the listed fields as their rules say, and retry.",
            fields=bad,
            param=bad[0],
            extra={"rules": {name: rules[name].described for name in bad}},
        )


def _query(rules: dict[str, Field]) -> dict[str, str]:
    """The query string's arguments, each named in `rules` and valid by its rule."""
    unknown = set(request.args) - set(rules)
    if unknown:
        raise ApiError(
            400,
            "unknown_fields",
            "The request has query parameters this endpoint does not take.",
            f"Remove them; allowed: {', '.join(sorted(rules))}.",
            fields=unknown,
        )
    args = {name: value for name, value in request.args.items() if value != ""}  # empty: not given
    _check(args, rules)
    return args


def _page_args(args: dict[str, str]) -> tuple[int, int | None]:
    """(limit, starting_after) of a checked query string."""
    return int(args.get("limit") or LIST_LIMIT_DEFAULT), _optional_int(args, "starting_after")


def _optional_int(args: dict[str, str], name: str) -> int | None:
    return int(args[name]) if name in args else None


def _list_json(page: service.ListPage, serialise) -> dict[str, Any]:
    """A page in Stripe's list shape."""
    return {
        "object": "list",
        "url": request.path,
        "data": [serialise(row) for row in page.rows],
        "has_more": page.has_more,
    }


# -- output -----------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def customer_json(customer: Customer) -> dict[str, Any]:
    return {
        "id": customer.id,
        "user_id": customer.user_id,
        "stripe_customer_id": customer.stripe_customer_id,
        "email": customer.email,
        "name": customer.name,
        "created_at": _iso(customer.created_at),
    }


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "customer_id": sub.customer_id,
        "price_id": sub.price_id,
        "tier": sub.tier,
        "status": sub.status,
        "stripe_subscription_id": sub.stripe_subscription_id,
        "current_period_end": _iso(sub.current_period_end),
        "created_at": _iso(sub.created_at),
    }


def _answer(result: service.Result, serialise):
    response = jsonify(serialise(result.value))
    response.status_code = 201 if result.created else 200
    if not result.created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# -- routes -----------------------------------------------------------------------


@bp.post("/customers")
@require_scope(PAYMENTS_WRITE)
@client_idempotent
def create_customer():
    body = _json_body({"user_id", "email", "name"})
    _check(body, fields.CUSTOMER_BODY)
    result = service.create_customer(body["user_id"], body["email"], body.get("name"))
    return _answer(result, customer_json)


@bp.get("/customers")
@require_scope(PAYMENTS_READ)
def list_customers():
    args = _query(fields.CUSTOMER_FILTERS)
    page = service.list_customers(
        *_page_args(args),
        user_id=args.get("user_id"),
        email=args.get("email"),
        stripe_customer_id=args.get("stripe_customer_id"),
    )
    return jsonify(_list_json(page, customer_json))


@bp.get("/customers/<id:customer_id>")
@require_scope(PAYMENTS_READ)
def get_customer(customer_id: int):
    return jsonify(customer_json(service.get_customer(customer_id)))


@bp.get("/customers/<id:customer_id>/subscriptions")
@require_scope(PAYMENTS_READ)
def list_customer_subscriptions(customer_id: int):
    args = _query(fields.CUSTOMER_SUBSCRIPTION_FILTERS)
    page = service.list_customer_subscriptions(customer_id, *_page_args(args), status=args.get("status"))
    return jsonify(_list_json(page, subscription_json))


@bp.post("/subscriptions")
@require_scope(PAYMENTS_WRITE)
@client_idempotent
def create_subscription():
    body = _json_body({"customer_id", "price_id", "tier", "payment_method"})
    _check(body, fields.SUBSCRIPTION_BODY)
    result = service.create_subscription(
        body["customer_id"], body["price_id"], body["tier"], body.get("payment_method")
    )
    return _answer(result, subscription_json)


@bp.get("/subscriptions")
@require_scope(PAYMENTS_READ)
def list_subscriptions():
    args = _query(fields.SUBSCRIPTION_FILTERS)
    page = service.list_subscriptions(
        *_page_args(args), customer_id=_optional_int(args, "customer_id"), status=args.get("status")
    )
    return jsonify(_list_json(page, subscription_json))


@bp.get("/subscriptions/<id:subscription_id>")
@require_scope(PAYMENTS_READ)
def get_subscription(subscription_id: int):
    return jsonify(subscription_json(service.get_subscription(subscription_id)))


@bp.post("/subscriptions/<id:subscription_id>/cancel")
@require_scope(PAYMENTS_WRITE)
@client_idempotent
def cancel_subscription(subscription_id: int):
    result = service.cancel_subscription(subscription_id)
    return jsonify(subscription_json(result.value))


@bp.get("/health")
def payments_health():
    """Anonymous: ok/degraded and the API version's status only. With an API key that has
    ops:read: every section (Stripe's answer, the breaker, the version, the worker)."""
    detailed = bearer_token() is not None
    if detailed:
        request_key(OPS_READ)  # a key that is sent must be valid and have the scope
    gateway = get_gateway()
    sections: dict[str, Any] = {
        "stripe": gateway.reachability(),
        "circuit_breaker": {
            "ok": gateway.breaker.current_state != "open",
            "state": gateway.breaker.current_state,
            "consecutive_failures": gateway.breaker.failures(),
        },
    }
    for name, check in health_checks().items():
        sections[name] = check()
    ok = all(section.get("ok", True) for section in sections.values())
    status = "ok" if ok else "degraded"
    if detailed:
        return jsonify(status=status, **sections), 200 if ok else 503
    # Whether Stripe takes our key, the breaker's count, the exact version and the worker's
    # pid tell an attacker when and how to push: the anonymous answer says only what a
    # load balancer and an uptime check need.
    version = sections.get("api_version", {}).get("status")
    return jsonify(status=status, api_version={"status": version}), 200 if ok else 503
