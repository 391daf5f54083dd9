"""What the payments API answers is what its published OpenAPI document says it answers: each
success body, from a real customer and subscription on the emulator, validated against the
document's schema for that path, method and status."""

from __future__ import annotations

import uuid

from jsonschema import Draft202012Validator

from tests.payments.workers import API, new_customer
from tests.support import FAST_RETRIES, make_key


def _schema(spec: dict, method: str, path: str, status: int) -> dict:
    schema = spec["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}  # its $refs point into the document


def _body_schema(spec: dict, path: str) -> dict:
    schema = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": spec["components"]}


def _valid(schema: dict, instance) -> list[str]:
    return [e.message for e in Draft202012Validator(schema).iter_errors(instance)]


def test_the_document_takes_the_bodies_the_api_takes_and_refuses_what_it_refuses(make_app, plan_id):
    spec = make_app().test_client().get("/api/v1/openapi.json").get_json()
    customers, subscriptions = _body_schema(spec, f"{API}/customers"), _body_schema(spec, f"{API}/subscriptions")
    assert _valid(customers, {"user_id": "u-1", "email": "u@example.com"}) == []
    assert _valid(customers, {"user_id": "u-1", "email": "u@example.com", "name": "Ada"}) == []
    assert _valid(subscriptions, {"customer_id": 1, "price_id": plan_id, "tier": "pro",
                                  "payment_method": "pm_card_visa"}) == []
    assert _valid(customers, {"user_id": "u-1"}) == ["'email' is a required property"]
    assert _valid(customers, {"user_id": "u-1", "email": "u@example.com", "colour": "red"}) == [
        "Additional properties are not allowed ('colour' was unexpected)"]
    assert _valid(customers, ["user_id", "email"]) == ["['user_id', 'email'] is not of type 'object'"]


def test_each_success_answer_matches_the_document(make_app, proxy, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    spec = client.get("/api/v1/openapi.json").get_json()
    customer = new_customer(client, headers, f"doc-{uuid.uuid4().hex[:10]}")
    made = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"})
    assert made.status_code == 201, made.get_json()
    subscription = made.get_json()
    answers = [
        ("post", "/customers", 201, customer),
        ("post", "/subscriptions", 201, subscription),
        ("get", "/customers", 200, client.get(f"{API}/customers", headers=headers)),
        ("get", "/customers/{customer_id}", 200, client.get(f"{API}/customers/{customer['id']}", headers=headers)),
        ("get", "/customers/{customer_id}/subscriptions", 200,
         client.get(f"{API}/customers/{customer['id']}/subscriptions", headers=headers)),
        ("get", "/subscriptions", 200, client.get(f"{API}/subscriptions", headers=headers)),
        ("get", "/subscriptions/{subscription_id}", 200,
         client.get(f"{API}/subscriptions/{subscription['id']}", headers=headers)),
    ]
    checked = []
    for method, path, status, answer in answers:
        if not isinstance(answer, dict):
            assert answer.status_code == status, answer.get_json()
            answer = answer.get_json()
        errors = [e.message for e in Draft202012Validator(_schema(spec, method, API + path, status)).iter_errors(answer)]
        assert errors == [], (method, path, errors)
        checked.append(path)
    # Lists with something in them: an empty page would check no item's schema.
    assert [len(a.get_json()["data"]) > 0 for _, _, _, a in answers[2:3] + answers[4:6]] == [True, True, True]
    assert len(checked) == 7
