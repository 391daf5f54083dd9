"""Subscriptions through the JSON API, against localstripe through the proxy."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.stripe_gateway.models import StripeCall
from tests.support import both_databases


def new_customer(api) -> dict:
    response = api.post("/customers", json={"user_id": f"s-{uuid.uuid4().hex[:10]}", "email": "s@example.com"})
    assert response.status_code == 201
    return response.get_json()


@both_databases
def test_subscribe_with_a_payment_method_then_same_again(api, plan_id, localstripe, proxy):
    customer = new_customer(api)
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    first = api.post("/subscriptions", json=body)
    assert first.status_code == 201, first.get_json()
    sub1 = first.get_json()
    assert sub1["status"] == "active" and sub1["stripe_subscription_id"].startswith("sub_")
    assert sub1["current_period_end"] is not None

    second = api.post("/subscriptions", json=body)
    assert second.status_code == 200 and second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["id"] == sub1["id"]  # the seed: sub1['id'] == sub2['id']
    assert len(proxy.requests_to("POST", r"^/v1/subscriptions$")) == 1

    stripe_customer = localstripe.v1.customers.retrieve(customer["stripe_customer_id"])
    assert stripe_customer.invoice_settings.default_payment_method is not None
    sent = proxy.requests_to("POST", r"^/v1/subscriptions$")[0].form
    assert sent["items"] == [{"price": plan_id}]  # today's API: price, translated to plan by the proxy only
    assert sent["metadata"] == {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}

    fetched = api.get(f"/subscriptions/{sub1['id']}")
    assert fetched.status_code == 200 and fetched.get_json() == sub1


def test_customer_without_payment_method_gets_a_clear_402(api, plan_id):
    customer = new_customer(api)
    response = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro"})
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "payment_method_required"
    # With a card the same request then works (the failed operation is retaken).
    ok = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro",
                                          "payment_method": "pm_card_visa"})
    assert ok.status_code == 201


def test_later_subscription_uses_the_customers_default_card(api, plan_id, localstripe):
    customer = new_customer(api)
    api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro",
                                     "payment_method": "pm_card_visa"})
    product = localstripe.v1.products.create(params={"name": "Kamiyo Team"})
    other = localstripe.v1.plans.create(params={"product": product.id, "amount": 9900, "currency": "usd",
                                                "interval": "month"})
    # Another price, no payment method: the default card set above pays for it.
    response = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": other.id, "tier": "team"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["status"] == "active"


@both_databases
def test_cancel_then_subscribe_again(api, plan_id, proxy):
    customer = new_customer(api)
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    sub = api.post("/subscriptions", json=body).get_json()
    canceled = api.post(f"/subscriptions/{sub['id']}/cancel")
    assert canceled.status_code == 200 and canceled.get_json()["status"] == "canceled"
    again = api.post(f"/subscriptions/{sub['id']}/cancel")
    assert again.status_code == 200 and again.get_json()["status"] == "canceled"
    assert len(proxy.requests_to("DELETE", r"^/v1/subscriptions/")) == 1

    renewed = api.post("/subscriptions", json=body)
    assert renewed.status_code == 201 and renewed.get_json()["id"] != sub["id"]


def test_declined_card_is_one_attempt_and_a_safe_402(api, plan_id, proxy, payments_app):
    customer = new_customer(api)
    response = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro",
                                                "payment_method": "pm_card_visa_chargeDeclined"})
    assert response.status_code == 402, response.get_json()
    assert response.get_json()["error"]["code"] in {"card_declined", "card_error"}
    with payments_app.app_context():
        failed = db.session.scalars(select(StripeCall).where(StripeCall.outcome == "error")).all()
    assert len(failed) == 1 and failed[0].error_type == "CardError"


def test_validation_and_unknown_customer(api, plan_id):
    bad = api.post("/subscriptions", json={"customer_id": "1", "price_id": "x y", "tier": "", "extra": 1})
    assert bad.status_code == 400 and bad.get_json()["error"]["fields"] == ["extra"]
    bad = api.post("/subscriptions", json={"customer_id": True, "price_id": "x y", "tier": "",
                                           "payment_method": "card_123"})
    assert bad.get_json()["error"]["fields"] == ["customer_id", "payment_method", "price_id", "tier"]
    missing = api.post("/subscriptions", json={"customer_id": 999999, "price_id": plan_id, "tier": "pro"})
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "customer_not_found"
    assert api.get("/subscriptions/999999").status_code == 404
    assert api.post("/subscriptions/999999/cancel").status_code == 404


def test_transient_failure_on_subscribe_is_retried_with_one_key(api, plan_id, proxy):
    customer = new_customer(api)
    proxy.add_faults(Fault("status", 500, path=r"^/v1/subscriptions$"))
    response = api.post("/subscriptions", json={"customer_id": customer["id"], "price_id": plan_id, "tier": "pro",
                                                "payment_method": "pm_card_visa"})
    assert response.status_code == 201
    attempts = proxy.requests_to("POST", r"^/v1/subscriptions$")
    assert len(attempts) == 2 and attempts[0].idempotency_key == attempts[1].idempotency_key
