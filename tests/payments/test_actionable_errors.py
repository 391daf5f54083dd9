"""Errors a calling developer can act on, and still PCI-safe: a distinct code per cause, the
field (`param`) where one applies, Stripe's decline_code only where it is safe to show, and
for each invalid field the rule it broke. Through the emulator proxy in front of localstripe."""

from __future__ import annotations

import uuid

from devtools.stripe_proxy import Fault
from tests.support import both_databases


def new_customer(api) -> dict:
    response = api.post("/customers", json={"user_id": f"e-{uuid.uuid4().hex[:10]}", "email": "e@example.com"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    error = response.get_json()["error"]
    assert set(error) >= {"code", "message", "user_action", "support_id"}
    return error


def subscribe(api, customer: dict, price: str, payment_method: str | None = "pm_card_visa"):
    body = {"customer_id": customer["id"], "price_id": price, "tier": "pro"}
    if payment_method:
        body["payment_method"] = payment_method
    return api.post("/subscriptions", json=body)


@both_databases
def test_unknown_price_is_price_not_found(api):
    error = error_of(subscribe(api, new_customer(api), "price_does_not_exist"), 400)
    assert (error["code"], error["param"]) == ("price_not_found", "price_id")


def test_bogus_payment_method_and_unknown_test_card_are_payment_method_invalid(api, plan_id):
    customer = new_customer(api)
    for payment_method in ("pm_bogus123", "pm_card_nosuchcard"):
        error = error_of(subscribe(api, customer, plan_id, payment_method), 400)
        assert (error["code"], error["param"]) == ("payment_method_invalid", "payment_method"), payment_method
        assert payment_method not in str(error)


def test_declined_card_is_card_declined(api, plan_id):
    error = error_of(subscribe(api, new_customer(api), plan_id, "pm_card_visa_chargeDeclined"), 402)
    assert (error["code"], error["param"]) == ("card_declined", "payment_method")
    assert "decline_code" not in error  # Stripe gave none


def test_safe_decline_codes_are_passed_on_and_the_others_are_generic(api, plan_id, proxy):
    customer = new_customer(api)
    for given, shown in [("do_not_honor", "do_not_honor"), ("stolen_card", "generic_decline"),
                         ("fraudulent", "generic_decline"), ("<script>", "generic_decline")]:
        proxy.add_faults(Fault("status", 402, path=r"^/v1/payment_methods/.*/attach$", decline_code=given))
        error = error_of(subscribe(api, customer, plan_id), 402)
        assert (error["code"], error["decline_code"], error["param"]) == ("card_declined", shown, "payment_method")


@both_databases
def test_customer_gone_from_stripe_is_customer_missing_on_stripe(api, plan_id, localstripe):
    """The demo's emulator restarted with no state, or another account's key: our row has a
    Stripe id that Stripe does not know."""
    customer = new_customer(api)
    localstripe.v1.customers.delete(customer["stripe_customer_id"])  # no webhook reaches us
    for payment_method in ("pm_card_visa", None):
        error = error_of(subscribe(api, customer, plan_id, payment_method), 409)
        assert (error["code"], error["param"]) == ("customer_missing_on_stripe", "customer_id"), payment_method
        assert error["message"] == "This customer is no longer on the Stripe account this service uses."
        assert error["user_action"] == (
            "Contact support and quote the support id: the customer must be created again on Stripe.")


def test_idempotency_key_must_be_1_to_255_printable_ascii(api):
    body = {"user_id": f"ik-{uuid.uuid4().hex[:8]}", "email": "ik@example.com"}
    for key in ('""', "x" * 256, "ключ", "tab\there", "nul\x7f"):
        error = error_of(api.post("/customers", json=body, headers={"Idempotency-Key": key}), 400)
        assert (error["code"], error["param"]) == ("idempotency_key_invalid", "Idempotency-Key"), repr(key)
        assert error["user_action"] == "Send 1 to 255 printable ASCII characters; a UUID is recommended."
    for key in ("x" * 255, "with space", "hello", str(uuid.uuid4())):
        response = api.post("/customers", json={**body, "user_id": f"ik-{uuid.uuid4().hex[:8]}"},
                            headers={"Idempotency-Key": key})
        assert response.status_code == 201, (key, response.get_json())


def test_validation_failed_says_the_rule_each_field_broke(api):
    error = error_of(api.post("/customers", json={"user_id": "bad id; drop", "name": ""}), 400)
    assert error["code"] == "validation_failed"
    assert error["fields"] == ["email", "name", "user_id"]
    assert error["param"] == "email"
    assert error["rules"] == {
        "email": "required: an email address of at most 254 characters",
        "name": "optional: 1 to 256 characters, no control characters (or null)",
        "user_id": "required: 1 to 128 characters from A-Z a-z 0-9 _ . : @ -",
    }
    error = error_of(api.post("/subscriptions", json={"customer_id": 0, "price_id": "x y", "tier": "",
                                                      "payment_method": "card_1"}), 400)
    assert error["rules"] == {
        "customer_id": "required: an integer from 1 to 2147483647",
        "payment_method": "optional: a PaymentMethod id, pm_ then 1 to 250 characters from A-Z a-z 0-9 _ (or null)",
        "price_id": "required: a Stripe price id, 1 to 255 characters from A-Z a-z 0-9 _",
        "tier": "required: 1 to 64 characters from A-Z a-z 0-9 _ -",
    }
    error = error_of(api.get("/subscriptions?limit=500&status=happy"), 400)
    assert error["rules"] == {
        "limit": "optional: a whole number from 1 to 100 (default 10)",
        "status": "optional: one of active, canceled, incomplete, incomplete_expired, past_due, paused, "
                  "trialing, unpaid",
    }


def test_the_readme_documents_every_fields_rule():
    from kamiyo.payments.fields import ALL
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    missing = [f"{where} {name}" for where, rules in ALL.items() for name, field in rules.items()
               if f"| `{where}` | `{name}` | {field.described} |" not in readme]
    assert missing == []


def test_a_body_with_fields_the_endpoint_does_not_take_is_refused_naming_them(api):
    body = {"user_id": f"uf-{uuid.uuid4().hex[:8]}", "email": "uf@example.com", "colour": "red", "plan": "x"}
    error = error_of(api.post("/customers", json=body), 400)
    assert (error["code"], error["fields"]) == ("unknown_fields", ["colour", "plan"])
    assert error["message"] == "The request has fields this endpoint does not take."
    assert error["user_action"] == "Remove them; allowed: email, name, user_id."
