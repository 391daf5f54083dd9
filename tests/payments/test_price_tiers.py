"""Which prices a subscription may use, and with which tier: PRICE_TIERS when configured,
else the price looked up on Stripe (once, cached) before anything else is sent. Either way
no card is attached for a request that will fail."""

from __future__ import annotations

import uuid

import pytest
import requests

from kamiyo import create_app
from kamiyo.config import ConfigError
from tests.support import FAST_RETRIES, assert_contract, both_databases, make_key


def new_customer(client, auth) -> dict:
    response = client.post("/api/v1/payments/customers", headers=auth,
                           json={"user_id": f"p-{uuid.uuid4().hex[:10]}", "email": "p@example.com"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def subscribe(client, auth, customer, price, tier="pro"):
    return client.post("/api/v1/payments/subscriptions", headers=auth, json={
        "customer_id": customer["id"], "price_id": price, "tier": tier, "payment_method": "pm_card_visa"})


@pytest.fixture
def tiered(make_app, proxy, plan_id, stripe_contract):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES, PRICE_TIERS={plan_id: "pro"})
    yield app, app.test_client(), make_key(app)
    assert_contract(proxy, stripe_contract)


@both_databases
def test_with_price_tiers_an_unknown_price_or_another_tier_never_reaches_stripe(tiered, proxy, plan_id):
    app, client, auth = tiered
    customer = new_customer(client, auth)
    proxy.clear_requests()

    unknown = subscribe(client, auth, customer, "price_unknown")
    assert unknown.status_code == 400
    error = unknown.get_json()["error"]
    assert (error["code"], error["param"]) == ("price_not_found", "price_id")
    mismatch = subscribe(client, auth, customer, plan_id, tier="enterprise-gold")
    assert mismatch.status_code == 400
    error = mismatch.get_json()["error"]
    assert (error["code"], error["param"], error["expected_tier"]) == ("tier_mismatch", "tier", "pro")
    assert proxy.requests == []  # not even a lookup

    ok = subscribe(client, auth, customer, plan_id)
    assert ok.status_code == 201, ok.get_json()
    assert proxy.requests_to("GET", r"^/v1/prices/") == []


@both_databases
def test_without_price_tiers_the_price_is_looked_up_before_any_card_is_attached(api, proxy, plan_id):
    customer = api.post("/customers", json={"user_id": f"p-{uuid.uuid4().hex[:10]}", "email": "p@example.com"})
    customer = customer.get_json()
    proxy.clear_requests()
    body = {"customer_id": customer["id"], "price_id": "price_unknown", "tier": "pro", "payment_method": "pm_card_visa"}
    for _ in range(2):
        response = api.post("/subscriptions", json=body)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert (error["code"], error["param"]) == ("price_not_found", "price_id")
    # One lookup (the answer is cached), and nothing else: no card attached, no default set.
    assert [(r.method, r.path, r.status) for r in proxy.requests] == [("GET", "/v1/prices/price_unknown", 404)]

    for _ in range(2):
        other = api.post("/customers", json={"user_id": f"p-{uuid.uuid4().hex[:10]}", "email": "p@example.com"})
        created = api.post("/subscriptions", json={**body, "customer_id": other.get_json()["id"], "price_id": plan_id})
        assert created.status_code == 201, created.get_json()
    assert [r.path for r in proxy.requests_to("GET", r"^/v1/prices/")] == ["/v1/prices/price_unknown",
                                                                          f"/v1/prices/{plan_id}"]


def test_the_emulator_proxy_answers_a_plan_as_a_price(proxy, plan_id):
    auth = {"Authorization": "Bearer sk_test_x"}
    found = requests.get(f"{proxy.url}/v1/prices/{plan_id}", headers=auth, timeout=5)
    assert found.status_code == 200
    price = found.json()
    assert {k: price[k] for k in ("id", "object", "active", "currency", "unit_amount", "type")} == {
        "id": "price_kamiyo_pro_monthly", "object": "price", "active": True, "currency": "usd",
        "unit_amount": 2900, "type": "recurring"}
    assert (price["recurring"]["interval"], price["recurring"]["interval_count"]) == ("month", 1)
    assert price["product"].startswith("prod_")
    missing = requests.get(f"{proxy.url}/v1/prices/price_nope", headers=auth, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"


def test_price_tiers_from_the_environment(monkeypatch, app_config):
    monkeypatch.setenv("PRICE_TIERS", " price_a=pro, price_b = team ")
    app = create_app(app_config)
    assert app.extensions["payments_price_tiers"] == {"price_a": "pro", "price_b": "team"}
    for bad, said in (
        ("price_a", "PRICE_TIERS: expected price_id=tier pairs separated by commas, not 'price_a'"),
        ("price_a=pro,price_a=team", "PRICE_TIERS: price_a is listed twice"),
        ("price a=pro", "PRICE_TIERS: expected price_id=tier pairs separated by commas, not 'price a=pro'"),
        ("price_a=gold tier", "PRICE_TIERS: expected price_id=tier pairs separated by commas, not 'price_a=gold tier'"),
    ):
        monkeypatch.setenv("PRICE_TIERS", bad)
        with pytest.raises(ConfigError) as refused:
            create_app(app_config)
        assert str(refused.value) == said
    monkeypatch.delenv("PRICE_TIERS")
    for mapping, said in (({"not a price": "pro"}, "PRICE_TIERS: 'not a price' is not a Stripe price id"),
                          ({"price_a": "gold tier"}, "PRICE_TIERS: the tier of price_a ('gold tier') is not a valid tier")):
        with pytest.raises(ConfigError) as refused:
            create_app({**app_config, "PRICE_TIERS": mapping})
        assert str(refused.value) == said
    monkeypatch.setenv("PRICE_TIERS", "")
    assert create_app(app_config).extensions["payments_price_tiers"] is None


def test_a_configured_price_stripe_does_not_have_is_still_price_not_found(make_app, proxy, plan_id):
    """PRICE_TIERS names a price the Stripe account lacks (a configuration mistake): Stripe's
    refusal of the subscription is still told as price_not_found, not a generic 400."""
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES, PRICE_TIERS={plan_id: "pro", "price_gone": "team"})
    client, auth = app.test_client(), make_key(app)
    response = subscribe(client, auth, new_customer(client, auth), "price_gone", tier="team")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == ("price_not_found", "price_id")
    assert [r.status for r in proxy.requests_to("POST", r"^/v1/subscriptions$")] == [404]
