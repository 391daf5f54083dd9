"""GET /api/v1/openapi.json: the OpenAPI 3.1 document of every JSON endpoint under /api/v1/.

The core owns the document and what every endpoint shares (the error shape, the headers, the
Bearer scheme); each feature registers its own paths at init_app, built from the rules its
views check, so the core never imports a feature and a rule change changes the document.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from .ids import MAX_ID, MIN_ID
from .observability.correlation import MAX_LENGTH as REQUEST_ID_MAX
from .observability.request_context import HEADER as REQUEST_ID_HEADER
from .stripe_gateway import errors as stripe_errors

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

PATHS = "openapi_paths"
ERROR = "#/components/schemas/Error"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
NO_AUTH: list[dict[str, list[str]]] = []  # an empty list overrides the document's default

Codes = Iterable[tuple[int, str]]  # (status, code) pairs an endpoint can answer with

# What any endpoint can answer: an unexpected failure (kamiyo/http_errors.py handle_unexpected).
ANY: tuple[tuple[int, str], ...] = ((500, "internal_error"),)
# A key's refusal: missing, unknown, revoked or expired (401; 429 past the per-IP failure
# limit, kamiyo/auth_failures.py), or without the route's scope (403, kamiyo/scopes.py).
UNAUTHORIZED: tuple[tuple[int, str], ...] = ((401, "unauthorized"), (403, "insufficient_scope"), (429, "rate_limited"))


def stripe_codes() -> list[tuple[int, str]]:
    """Every answer a failed Stripe call maps to (kamiyo/stripe_gateway/errors.py's table)."""
    specs = [*stripe_errors.CARD_ERRORS.values(), stripe_errors.CARD_ERROR_GENERIC, stripe_errors.INVALID_REQUEST]
    specs += [rule for _, rule in stripe_errors.ERROR_RULES if isinstance(rule, stripe_errors.ErrorSpec)]
    specs.append(stripe_errors.INTERNAL_ERROR)
    return sorted({(spec.http_status, spec.error_code) for spec in specs})


def register_paths(app: Flask, paths: Mapping[str, Mapping[str, Any]]) -> None:
    """Add a feature's path items ({"/api/v1/...": {"get": operation, ...}})."""
    registered = app.extensions.setdefault(PATHS, {})
    for path, item in paths.items():
        registered.setdefault(path, {}).update(copy.deepcopy(dict(item)))


def path_id(name: str, description: str) -> dict[str, Any]:
    """A `<id:name>` URL segment: a row id in range, any other value is a 404."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "integer", "minimum": MIN_ID, "maximum": MAX_ID},
    }


def query_param(name: str, schema: Mapping[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description, "schema": dict(schema)}


def json_response(description: str, schema: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> dict:
    answer: dict[str, Any] = {
        "description": description,
        "headers": {REQUEST_ID_HEADER: {"$ref": "#/components/headers/X-Request-ID"}, **(headers or {})},
        "content": {"application/json": {"schema": dict(schema)}},
    }
    return answer


def errors(*groups: Codes) -> dict[str, Any]:
    """The error answers of an operation, one per status, each listing its codes."""
    by_status: dict[int, set[str]] = {}
    for group in (*groups, ANY):
        for status, code in group:
            by_status.setdefault(status, set()).add(code)
    answers: dict[str, Any] = {}
    for status in sorted(by_status):
        codes = sorted(by_status[status])
        headers: dict[str, Any] = {}
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if status == 401:
            headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWW-Authenticate"}
        schema = {
            "allOf": [
                {"$ref": ERROR},
                {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
            ]
        }
        answers[str(status)] = json_response("Error: " + ", ".join(codes) + ".", schema, headers)
    return answers


def documented_codes(document: Mapping[str, Any]) -> dict[tuple[str, str], dict[int, list[str]]]:
    """(method, path) → {status: [codes]}, read back from a document (tests, the docs page)."""
    found: dict[tuple[str, str], dict[int, list[str]]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            for status, answer in operation["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                for part in schema.get("allOf", []):
                    codes = part.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
                    if "enum" in codes:
                        found.setdefault((method.upper(), path), {})[int(status)] = list(codes["enum"])
    return found


COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`flask api-keys create`), sent as 'Authorization: Bearer <key>'.",
        }
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "user_action", "support_id"],
                    "properties": {
                        "code": {"type": "string", "description": "What went wrong, for a program."},
                        "message": {"type": "string", "description": "What went wrong, for a person."},
                        "user_action": {"type": "string", "description": "What to do about it."},
                        "support_id": {"type": "string", "description": "The request's X-Request-ID."},
                        "fields": {"type": "array", "items": {"type": "string"}, "description": "The fields at fault."},
                        "param": {"type": "string", "description": "The first field (or header) at fault."},
                        "rules": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "validation_failed: each refused field's rule.",
                        },
                    },
                    "additionalProperties": True,
                }
            },
        },
    },
    "parameters": {
        "X-Request-ID": {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": f"A correlation id to use (kept: A-Za-z0-9_-, up to {REQUEST_ID_MAX}); else one is made.",
            "schema": {"type": "string"},
        },
    },
    "headers": {
        "X-Request-ID": {
            "description": "The request's correlation id, also the error's support_id.",
            "schema": {"type": "string", "maxLength": REQUEST_ID_MAX},
        },
        "Retry-After": {
            "description": "Whole seconds to wait before retrying.",
            "schema": {"type": "integer", "minimum": 1},
        },
        "WWW-Authenticate": {"description": "The Bearer challenge (RFC 6750).", "schema": {"type": "string"}},
        "Idempotent-Replayed": {
            "description": "`true` when the answer is the stored one of an earlier, identical request.",
            "schema": {"type": "string", "enum": ["true"]},
        },
    },
}


def document(app: Flask | None = None) -> dict[str, Any]:
    app = app or current_app
    paths = copy.deepcopy(app.extensions.get(PATHS, {}))
    for item in paths.values():
        for operation in item.values():
            operation.setdefault("parameters", []).append({"$ref": "#/components/parameters/X-Request-ID"})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kamiyo Payments API",
            "version": "1",
            "description": 'Every error answers in one shape, {"error": {code, message, user_action, support_id}}.',
        },
        "security": BEARER,
        "paths": dict(sorted(paths.items())),
        "components": copy.deepcopy(COMPONENTS),
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(document())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    register_paths(
        app,
        {
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "tags": ["meta"],
                    "security": NO_AUTH,
                    "responses": {
                        "200": json_response("The OpenAPI document.", {"type": "object"}),
                        **errors(),
                    },
                }
            }
        },
    )
