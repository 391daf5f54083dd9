"""The payments API's part of the OpenAPI document: bodies and query parameters from fields.py,
the same rules the views check; answers and error codes as the views and the service raise them."""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..openapi import UNAUTHORIZED, errors, json_response, path_id, query_param, register_paths, stripe_codes
from . import fields
from .client_keys import CLIENT_KEY_RE
from .fields import Field

PREFIX = "/api/v1/payments"

# What every JSON body and query string can be refused with (views.py).
BODY_CODES = (
    (400, "invalid_json"),
    (400, "unknown_fields"),
    (400, "validation_failed"),
    (400, "card_data_not_allowed"),
    (413, "payload_too_large"),
    (415, "unsupported_media_type"),
)
QUERY_CODES = ((400, "unknown_fields"), (400, "validation_failed"))
# The Idempotency-Key header (client_keys.py) and a fenced operation (operations.py, phases.py).
KEY_CODES = ((400, "idempotency_key_invalid"), (409, "idempotency_key_in_flight"), (422, "idempotency_key_reused"))
OPERATION_CODES = ((409, "operation_in_progress"), (409, "operation_superseded"))
NOT_FOUND = ((404, "not_found"),)  # an id outside MIN_ID..MAX_ID in the URL

CUSTOMER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "user_id": {"type": "string"},
        "stripe_customer_id": {"type": ["string", "null"]},
        "email": {"type": "string"},
        "name": {"type": ["string", "null"]},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
SUBSCRIPTION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "customer_id": {"type": "integer"},
        "price_id": {"type": "string"},
        "tier": {"type": "string"},
        "status": {"type": "string", "enum": list(fields.SUBSCRIPTION_STATUSES)},
        "stripe_subscription_id": {"type": ["string", "null"]},
        "current_period_end": {"type": ["string", "null"], "format": "date-time"},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def listing(item: dict[str, Any]) -> dict[str, Any]:
    """Stripe's list shape (views.py _list_json)."""
    return {
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "url": {"type": "string"},
            "data": {"type": "array", "items": item},
            "has_more": {"type": "boolean"},
        },
    }


def body_schema(rules: dict[str, Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [name for name, field in rules.items() if field.required],
        "properties": {name: {**field.schema, "description": field.described} for name, field in rules.items()},
    }


def query_params(rules: dict[str, Field]) -> list[dict[str, Any]]:
    return [query_param(name, field.schema, field.described, field.required) for name, field in rules.items()]


def request_body(rules: dict[str, Field]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": body_schema(rules)}}}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and body replays the stored answer; a UUID is recommended.",
    "schema": {"type": "string", "pattern": CLIENT_KEY_RE.pattern},
}
REPLAYED = {"Idempotent-Replayed": {"$ref": "#/components/headers/Idempotent-Replayed"}}


def _created(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "201": json_response(f"The new {name}.", schema),
        "200": json_response(f"The {name} that an identical earlier request made (a replay).", schema, REPLAYED),
    }


def paths() -> dict[str, dict[str, Any]]:
    customer_id = path_id("customer_id", "The customer's id.")
    subscription_id = path_id("subscription_id", "The subscription's id.")
    stripe = stripe_codes()
    return {
        f"{PREFIX}/customers": {
            "post": {
                "operationId": "createCustomer",
                "summary": "Create a customer (on Stripe and here), once per user_id",
                "tags": ["payments"],
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": request_body(fields.CUSTOMER_BODY),
                "responses": {
                    **_created("customer", CUSTOMER),
                    **errors(
                        BODY_CODES,
                        KEY_CODES,
                        OPERATION_CODES,
                        UNAUTHORIZED,
                        ((409, "customer_exists_with_different_details"), (503, "customer_deleted_meanwhile")),
                        stripe,
                    ),
                },
            },
            "get": {
                "operationId": "listCustomers",
                "summary": "List customers, newest first, filtered by exact values",
                "tags": ["payments"],
                "parameters": query_params(fields.CUSTOMER_FILTERS),
                "responses": {
                    "200": json_response("A page of customers.", listing(CUSTOMER)),
                    **errors(QUERY_CODES, UNAUTHORIZED),
                },
            },
        },
        f"{PREFIX}/customers/{{customer_id}}": {
            "get": {
                "operationId": "getCustomer",
                "summary": "A customer",
                "tags": ["payments"],
                "parameters": [customer_id],
                "responses": {
                    "200": json_response("The customer.", CUSTOMER),
                    **errors(NOT_FOUND, ((404, "customer_not_found"),), UNAUTHORIZED),
                },
            }
        },
        f"{PREFIX}/customers/{{customer_id}}/subscriptions": {
            "get": {
                "operationId": "listCustomerSubscriptions",
                "summary": "A customer's subscriptions, cancelled ones included",
                "tags": ["payments"],
                "parameters": [customer_id, *query_params(fields.CUSTOMER_SUBSCRIPTION_FILTERS)],
                "responses": {
                    "200": json_response("A page of subscriptions.", listing(SUBSCRIPTION)),
                    **errors(QUERY_CODES, NOT_FOUND, ((404, "customer_not_found"),), UNAUTHORIZED),
                },
            }
        },
        f"{PREFIX}/subscriptions": {
            "post": {
                "operationId": "createSubscription",
                "summary": "Subscribe a customer to a price, once per customer and price",
                "tags": ["payments"],
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": request_body(fields.SUBSCRIPTION_BODY),
                "responses": {
                    **_created("subscription", SUBSCRIPTION),
                    **errors(
                        BODY_CODES,
                        KEY_CODES,
                        OPERATION_CODES,
                        UNAUTHORIZED,
                        (
                            (400, "price_not_found"),
                            (400, "tier_mismatch"),
                            (400, "payment_method_invalid"),
                            (402, "payment_method_required"),
                            (404, "customer_not_found"),
                            (409, "customer_deleted"),
                            (409, "customer_missing_on_stripe"),
                        ),
                        stripe,
                    ),
                },
            },
            "get": {
                "operationId": "listSubscriptions",
                "summary": "List subscriptions, newest first",
                "tags": ["payments"],
                "parameters": query_params(fields.SUBSCRIPTION_FILTERS),
                "responses": {
                    "200": json_response("A page of subscriptions.", listing(SUBSCRIPTION)),
                    **errors(QUERY_CODES, UNAUTHORIZED),
                },
            },
        },
        f"{PREFIX}/subscriptions/{{subscription_id}}": {
            "get": {
                "operationId": "getSubscription",
                "summary": "A subscription",
                "tags": ["payments"],
                "parameters": [subscription_id],
                "responses": {
                    "200": json_response("The subscription.", SUBSCRIPTION),
                    **errors(NOT_FOUND, ((404, "subscription_not_found"),), UNAUTHORIZED),
                },
            }
        },
        f"{PREFIX}/subscriptions/{{subscription_id}}/cancel": {
            "post": {
                "operationId": "cancelSubscription",
                "summary": "Cancel a subscription (idempotent)",
                "tags": ["payments"],
                "parameters": [subscription_id, IDEMPOTENCY_KEY],
                "responses": {
                    "200": json_response("The subscription, cancelled.", SUBSCRIPTION, REPLAYED),
                    **errors(
                        NOT_FOUND,
                        ((404, "subscription_not_found"),),
                        KEY_CODES,
                        OPERATION_CODES,
                        UNAUTHORIZED,
                        stripe,
                    ),
                },
            }
        },
        f"{PREFIX}/health": {
            "get": {
                "operationId": "paymentsHealth",
                "summary": "Stripe's reachability, the circuit breaker and the features' health sections",
                "description": "Anonymous: the status and api_version.status only. With an API key that has "
                "ops:read: every section (Stripe's answer, the breaker, the version, the worker).",
                "tags": ["payments"],
                "security": [{"bearerAuth": []}, {}],  # optional: the key only adds detail
                "responses": {
                    "200": json_response("Everything is ok.", HEALTH),
                    "503": json_response("Some section is not ok (status: degraded).", HEALTH),
                    **errors(UNAUTHORIZED),
                },
            }
        },
    }


HEALTH = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ok", "degraded"]},
        "stripe": {"type": "object"},
        "circuit_breaker": {
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "state": {"type": "string"},
                "consecutive_failures": {"type": "integer"},
            },
        },
    },
    "additionalProperties": {"type": "object"},
}


def init_app(app: Flask) -> None:
    register_paths(app, paths())
