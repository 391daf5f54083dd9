"""Requests checked against Stripe's published OpenAPI spec (../shared/stripe-openapi)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stripe

from devtools.stripe_contract import BUNDLED_SPEC_DIR, StripeContract, default_spec_dir


def test_a_valid_customer_create_passes(stripe_contract):
    form = {"email": "ada@example.com", "name": "Ada", "metadata": {"kamiyo_user": "42"},
            "preferred_locales": ["en", "fr"], "balance": "-500", "address": "",
            "invoice_settings": {"default_payment_method": "pm_1"}}
    assert stripe_contract.validate("POST", "/v1/customers", form) == []


def test_an_unknown_parameter_is_reported(stripe_contract):
    problems = stripe_contract.validate("POST", "/v1/customers", {"email": "a@b.c", "favourite_colour": "red"})
    assert problems == ["POST /v1/customers (/v1/customers): unknown parameter(s): favourite_colour"]


def test_an_unknown_nested_parameter_is_reported(stripe_contract):
    problems = stripe_contract.validate("POST", "/v1/customers", {"address": {"city": "Oslo", "planet": "Earth"}})
    assert problems == ["POST /v1/customers (/v1/customers): unknown parameter(s): address[planet]"]


def test_a_wrong_type_is_reported(stripe_contract):
    [problem] = stripe_contract.validate("POST", "/v1/customers", {"balance": "ten"})
    assert "balance: 'ten' is not of type 'integer'" in problem
    [problem] = stripe_contract.validate("POST", "/v1/subscriptions", {"customer": "cus_1", "cancel_at_period_end": "yes"})
    assert "cancel_at_period_end: 'yes' is not of type 'boolean'" in problem


def test_a_bad_enum_value_is_reported(stripe_contract):
    [problem] = stripe_contract.validate("POST", "/v1/customers", {"tax_exempt": "sometimes"})
    assert "tax_exempt: 'sometimes' is not one of" in problem


def test_paths_with_ids_match_their_templates(stripe_contract):
    assert stripe_contract.template_for("/v1/customers/cus_123") == "/v1/customers/{customer}"
    assert stripe_contract.template_for("/v1/customers/search") == "/v1/customers/search"
    assert stripe_contract.template_for("/v1/payment_methods/pm_1/attach") == \
        "/v1/payment_methods/{payment_method}/attach"
    assert stripe_contract.validate("POST", "/v1/customers/cus_123", {"name": "New"}) == []
    assert stripe_contract.validate("DELETE", "/v1/customers/cus_123", {}) == []


def test_subscription_items_speak_price_not_plan(stripe_contract):
    form = {"customer": "cus_1", "items": [{"price": "price_1", "quantity": "2"}],
            "payment_behavior": "default_incomplete", "expand": ["latest_invoice.payment_intent"]}
    assert stripe_contract.validate("POST", "/v1/subscriptions", form) == []
    problems = stripe_contract.validate("POST", "/v1/subscriptions", {"customer": "cus_1", "items": [{"plan": "p"}]})
    assert problems == ["POST /v1/subscriptions (/v1/subscriptions): unknown parameter(s): items[0][plan]"]


def test_query_parameters_of_get_requests(stripe_contract):
    assert stripe_contract.validate("GET", "/v1/customers", {"limit": "3", "created": {"gte": "1700000000"}}) == []
    problems = stripe_contract.validate("GET", "/v1/customers", {"limit": "many", "colour": "red"})
    assert len(problems) == 2
    assert any("unknown parameter(s): colour" in p for p in problems)
    assert any("limit: 'many' is not of type 'integer'" in p for p in problems)


def test_paths_and_methods_the_spec_lacks(stripe_contract):
    # The name is the shared file's, or the bundled copy's (.json.gz) in a clone without ../shared.
    assert stripe_contract.validate("POST", "/v1/teleports", {}) == [
        f"POST /v1/teleports: no such path in Stripe's OpenAPI spec ({stripe_contract.name})"]
    assert stripe_contract.name.startswith("spec3-2022-04-12.json")
    [problem] = stripe_contract.validate("PUT", "/v1/customers", {})
    assert "has no PUT operation on /v1/customers" in problem


def test_requests_recorded_by_the_proxy_validate(proxy, stripe_contract):
    client = stripe.StripeClient("sk_test_contract", base_addresses={"api": proxy.url}, max_network_retries=0,
                                 http_client=stripe.RequestsClient(timeout=5))
    customer = client.v1.customers.create(params={"email": "contract@example.com", "metadata": {"plan": "pro"}})
    client.v1.customers.update(customer.id, params={"name": "Contract Test"})
    client.v1.customers.list(params={"limit": 5})
    assert len(proxy.requests) == 3
    for record in proxy.requests:
        assert stripe_contract.validate(record.method, record.path, record.form) == [], record


def test_spec_is_loaded_once_and_the_folder_is_configurable(stripe_contract, tmp_path, monkeypatch):
    assert StripeContract.load() is stripe_contract
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "stripe-openapi"
    assert default_spec_dir() == (shared if shared.is_dir() else BUNDLED_SPEC_DIR)
    monkeypatch.setenv("STRIPE_OPENAPI_DIR", str(tmp_path))
    assert default_spec_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="STRIPE_OPENAPI_DIR"):
        StripeContract.load()
    tiny = {"paths": {"/v1/widgets/{widget}": {"post": {"requestBody": {"content": {
        "application/x-www-form-urlencoded": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"size": {"type": "integer"}}}}}}}}}}
    (tmp_path / "spec3-tiny.json").write_text(json.dumps(tiny))
    contract = StripeContract.load()
    assert contract is not stripe_contract
    assert contract.validate("POST", "/v1/widgets/w_1", {"size": "3"}) == []
    assert contract.validate("POST", "/v1/widgets/w_1", {"size": "big"}) != []


def test_the_bundled_copy_serves_a_clone_without_shared():
    from devtools.stripe_contract import BUNDLED_SPEC_DIR, StripeContract

    bundled = StripeContract.load(BUNDLED_SPEC_DIR)
    assert bundled.validate("POST", "/v1/customers", {"email": "a@b.co"}) == []
    assert bundled.validate("POST", "/v1/customers", {"email": "a@b.co", "bogus": "1"})
