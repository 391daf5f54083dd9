"""GET /api/v1/openapi.json: a valid document, covering every route under /api/v1/, its rules
those the views check (kamiyo/payments/fields.py), its error codes ones the code can raise."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from kamiyo.http_errors import HTTP_ERRORS
from kamiyo.openapi import documented_codes, stripe_codes
from kamiyo.payments import fields
from kamiyo.payments.client_keys import CLIENT_KEY_RE

KAMIYO = Path(__file__).resolve().parent.parent / "kamiyo"
PAYMENTS = "/api/v1/payments"


@pytest.fixture
def spec(client):
    answer = client.get("/api/v1/openapi.json")  # no API key: anyone may read it
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    return answer.json


def _operation(spec, method: str, path: str) -> dict:
    return spec["paths"][path][method.lower()]


def _param(operation: dict, name: str) -> dict:
    return next(p for p in operation["parameters"] if p.get("name") == name)


def test_the_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }


def test_every_route_under_api_v1_is_documented_with_its_methods(app, spec):
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    documented = {path: set(item) - {"parameters"} for path, item in spec["paths"].items()}
    assert documented == routes
    assert len(routes) == 15  # payments 8 (and health), webhooks 1, ops 6, this document


def test_bearer_everywhere_but_the_open_endpoints(spec):
    assert spec["security"] == [{"bearerAuth": []}]
    open_ones = {
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if operation.get("security") == []
    }
    assert open_ones == {
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/webhooks/stripe"),
    }
    # Anonymous gets the status only; a key with ops:read, the detail.
    assert _operation(spec, "GET", f"{PAYMENTS}/health")["security"] == [{"bearerAuth": []}, {}]
    for (method, path), by_status in documented_codes(spec).items():
        if (method.lower(), path) not in open_ones:
            assert by_status[401] == ["unauthorized"], (method, path)
            assert by_status[403] == ["insufficient_scope"], (method, path)
            assert by_status[429] == ["rate_limited"], (method, path)


def test_request_fields_carry_the_views_rules(spec):
    body = _operation(spec, "POST", f"{PAYMENTS}/customers")["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["user_id"]["pattern"] == fields.USER_ID_RE.pattern == "^[A-Za-z0-9_.:@-]{1,128}$"
    assert body["properties"]["email"]["maxLength"] == fields.EMAIL_MAX == 254
    assert body["properties"]["name"]["maxLength"] == fields.NAME_MAX
    assert body["required"] == ["user_id", "email"]
    assert body["additionalProperties"] is False
    sub = _operation(spec, "POST", f"{PAYMENTS}/subscriptions")["requestBody"]["content"]["application/json"]["schema"]
    assert sub["properties"]["price_id"]["pattern"] == fields.STRIPE_ID_RE.pattern
    assert sub["properties"]["tier"]["pattern"] == fields.TIER_RE.pattern
    assert sub["properties"]["payment_method"]["pattern"] == fields.PAYMENT_METHOD_RE.pattern
    assert sub["properties"]["customer_id"]["maximum"] == 2**31 - 1
    assert sub["properties"]["tier"]["description"] == fields.SUBSCRIPTION_BODY["tier"].described
    listing = _operation(spec, "GET", f"{PAYMENTS}/subscriptions")
    assert _param(listing, "limit")["schema"]["maximum"] == 100
    assert _param(listing, "status")["schema"]["enum"] == list(fields.SUBSCRIPTION_STATUSES)
    key = _param(_operation(spec, "POST", f"{PAYMENTS}/customers"), "Idempotency-Key")
    assert key["schema"]["pattern"] == CLIENT_KEY_RE.pattern
    # Every rule of fields.ALL, body field or query parameter, is in the document as it is.
    for where, rules in fields.ALL.items():
        method, path = where.split(" ")
        operation = _operation(spec, method, PAYMENTS + path.replace("<id>", "{customer_id}"))
        if method == "POST":
            documented = operation["requestBody"]["content"]["application/json"]["schema"]["properties"]
        else:
            documented = {p["name"]: p["schema"] for p in operation["parameters"] if p.get("in") == "query"}
        assert set(documented) == set(rules), where
        for name, field in rules.items():
            assert {k: v for k, v in documented[name].items() if k != "description"} == field.schema, (where, name)


def test_a_changed_rule_changes_the_document(make_app, monkeypatch):
    monkeypatch.setitem(
        fields.CUSTOMER_BODY, "user_id", fields.USER_ID._replace(schema={"type": "string", "pattern": "^x$"})
    )
    spec = make_app().test_client().get("/api/v1/openapi.json").json
    body = _operation(spec, "POST", f"{PAYMENTS}/customers")["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["user_id"]["pattern"] == "^x$"


def _raisable() -> set[tuple[int, str]]:
    """(status, code) of every ApiError the source builds with literals, Flask's own errors
    and the Stripe error table."""
    found = {(status, code) for status, (code, _, _) in HTTP_ERRORS.items()} | set(stripe_codes())
    for path in KAMIYO.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ApiError" and len(node.args) >= 2:
                status, code = node.args[:2]
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    found.add((status.value, code.value))
    return found


def test_each_documented_error_code_is_one_the_code_can_raise(spec):
    raisable = _raisable()
    documented = documented_codes(spec)
    for (method, path), by_status in documented.items():
        for status, codes in by_status.items():
            for code in codes:
                assert (status, code) in raisable, (method, path, status, code)
    create = documented[("POST", f"{PAYMENTS}/customers")]
    assert create[409] == [
        "customer_exists_with_different_details",
        "idempotency_conflict",
        "idempotency_key_in_flight",
        "operation_in_progress",
        "operation_superseded",
    ]
    assert create[400][:3] == ["card_data_not_allowed", "idempotency_key_invalid", "invalid_json"]
    assert create[422] == ["idempotency_key_reused"]
    assert "payment_service_unavailable" in create[503]
    subscribe = documented[("POST", f"{PAYMENTS}/subscriptions")]
    assert {"price_not_found", "tier_mismatch", "validation_failed"} <= set(subscribe[400])
    assert subscribe[402] == sorted({"payment_method_required", *[c for s, c in stripe_codes() if s == 402]})
    assert documented[("GET", f"{PAYMENTS}/customers/{{customer_id}}/subscriptions")][404] == [
        "customer_not_found",
        "not_found",
    ]
    assert documented[("POST", "/api/v1/webhooks/stripe")] == {
        400: ["invalid_webhook"],
        413: ["payload_too_large"],
        429: ["rate_limited"],
        500: ["internal_error", "webhook_failed"],
        503: ["webhook_deferred"],
    }
    assert documented[("GET", "/api/v1/ops/stripe-calls")][400] == ["invalid_cursor", "invalid_filter", "invalid_range"]


def test_the_headers_are_documented(spec):
    headers = spec["components"]["headers"]
    assert {"X-Request-ID", "Retry-After", "Idempotent-Replayed"} <= set(headers)
    create = _operation(spec, "POST", f"{PAYMENTS}/customers")
    assert "Idempotent-Replayed" in create["responses"]["200"]["headers"]
    assert "Retry-After" in create["responses"]["503"]["headers"]
    assert "Retry-After" in _operation(spec, "POST", "/api/v1/webhooks/stripe")["responses"]["429"]["headers"]
    for item in spec["paths"].values():
        for operation in item.values():
            assert {"$ref": "#/components/parameters/X-Request-ID"} in operation["parameters"]
            for answer in operation["responses"].values():
                assert "X-Request-ID" in answer["headers"]


def test_a_documented_error_answers_in_the_documented_shape(app, client, spec):
    from tests.support import make_key

    answer = client.post(f"{PAYMENTS}/customers", json={"user_id": "u 1", "email": "a@b.co"}, headers=make_key(app))
    assert answer.status_code == 400
    error = answer.json["error"]
    assert error["code"] in documented_codes(spec)[("POST", f"{PAYMENTS}/customers")][400]
    required = spec["components"]["schemas"]["Error"]["properties"]["error"]["required"]
    assert set(required) <= set(error)


def test_the_docs_page_shows_the_document_to_a_signed_in_user(app, client, spec):
    from tests.support import login, make_user

    make_user(app, "viewer@example.com", "viewer")
    login(client, "viewer@example.com")
    page = client.get("/dashboard/api")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<script" not in html
    assert 'href="/api/v1/openapi.json"' in html
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert f'id="{operation["operationId"]}"' in html
            assert f"<code>{method.upper()} {path}</code>" in html
    assert "<code>customer_exists_with_different_details</code>" in html
    assert fields.SUBSCRIPTION_BODY["tier"].described in html
