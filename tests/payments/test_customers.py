"""Customers through the JSON API, against a real localstripe."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select

from tests.support import both_databases, stripe_customers_for
from kamiyo.extensions import db
from kamiyo.models import Customer


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@both_databases
def test_create_customer_then_same_user_returns_the_same(api, localstripe, payments_app, caplog):
    user = new_user()
    first = api.post("/customers", json={"user_id": user, "email": "ada@example.com", "name": "Ada"})
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["user_id"] == user and body["stripe_customer_id"].startswith("cus_")
    assert set(body) == {"id", "user_id", "stripe_customer_id", "email", "name", "created_at"}

    with caplog.at_level(logging.INFO, logger="kamiyo.payments.idempotency"):
        second = api.post("/customers", json={"user_id": user, "email": "ada@example.com", "name": "Ada"})
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["id"] == body["id"]
    assert second.get_json()["stripe_customer_id"] == body["stripe_customer_id"]
    assert any("IDEMPOTENCY" in r.getMessage() and "existing" in r.getMessage() for r in caplog.records)

    stripe_side = stripe_customers_for(localstripe, user)
    assert [c.id for c in stripe_side] == [body["stripe_customer_id"]]
    assert stripe_side[0].email == "ada@example.com"
    with payments_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Customer).where(Customer.user_id == user)) == 1


def test_get_customer(api):
    created = api.post("/customers", json={"user_id": new_user(), "email": "g@example.com"}).get_json()
    fetched = api.get(f"/customers/{created['id']}")
    assert fetched.status_code == 200 and fetched.get_json() == created
    missing = api.get("/customers/999999")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "customer_not_found"


def test_requires_an_api_key(payments_app):
    response = payments_app.test_client().post("/api/v1/payments/customers", json={"user_id": "u", "email": "a@b.co"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_json_only(api):
    response = api.post("/customers", data="user_id=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


def test_unknown_and_invalid_fields_are_listed(api):
    unknown = api.post("/customers", json={"user_id": "u-1", "email": "a@b.co", "card_number": "4242"})
    assert unknown.status_code == 400
    assert unknown.get_json()["error"]["fields"] == ["card_number"]
    invalid = api.post("/customers", json={"user_id": "bad id; drop", "email": "not-an-email", "name": 7})
    assert invalid.status_code == 400
    assert invalid.get_json()["error"]["fields"] == ["email", "name", "user_id"]
    missing = api.post("/customers", json={})
    assert missing.get_json()["error"]["fields"] == ["email", "user_id"]
    not_object = api.post("/customers", json=[1, 2])
    assert not_object.status_code == 400 and not_object.get_json()["error"]["code"] == "invalid_json"


@both_databases
def test_control_characters_are_refused_before_stripe_is_called(api, proxy):
    """PostgreSQL cannot store NUL in text: such a customer used to reach Stripe, then fail
    to be stored (500, a Stripe customer without our row). Refused up front instead."""
    user = new_user()
    response = api.post("/customers", json={"user_id": user, "email": "a\x00b@example.com", "name": "Ada\x00"})
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"] == ["email", "name"]
    assert proxy.requests_to("POST", "/v1/customers") == []
    fine = api.post("/customers", json={"user_id": user, "email": "ada@example.com", "name": "Zoë Ünïcode"})
    assert fine.status_code == 201 and fine.get_json()["name"] == "Zoë Ünïcode"


def test_every_c0_character_and_del_is_refused_in_a_name(api, proxy):
    for code in [*range(0x20), 0x7F]:
        body = {"user_id": new_user(), "email": "ada@example.com", "name": f"A{chr(code)}da"}
        response = api.post("/customers", json=body)
        assert response.status_code == 400, hex(code)
        assert response.get_json()["error"]["fields"] == ["name"], hex(code)
    assert proxy.requests_to("POST", "/v1/customers") == []
