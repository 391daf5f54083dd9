"""Personal and payment details that Stripe sends under names beyond a fixed deny-list are not
stored either: the inbox keeps, per handled type, only what the handlers read plus ids, object
types, timestamps, amounts and statuses (kamiyo/webhooks/minimise.py).

- a payment method that is not a card: `sepa_debit` (bank, last 4, fingerprint),
  `us_bank_account` (routing number, last 4), `link` (the payer's email), `paypal` (payer email
  and name), inside payment_intent.payment_failed's last_payment_error;
- customer.updated's `previous_attributes`: the customer's former email and name, which no
  handler reads (they read the object's current email and name);
- an invoice's `customer_tax_ids` (a sole trader's VAT number) and its `hosted_invoice_url` /
  `invoice_pdf` (bearer links that open the invoice, contact details included);
- the email and name of a customer the handler ignores (not ours) or that was deleted.
"""

from __future__ import annotations

import json

from kamiyo.extensions import db
from kamiyo.webhooks import handlers, minimise
from kamiyo.webhooks.models import WebhookEvent
from tests.support import both_databases
from tests.webhooks.stripe_signing import customer, make_event, post

pytestmark = both_databases

EMAIL = "payer.private@mail.example"
NAME = "Hedy Kiesler Markey"
IBAN_LAST4, BANK_CODE, FINGERPRINT = "3000", "37040044", "SepaFp7Qx2Lk"
ROUTING, ACCOUNT_LAST4 = "110000000", "6789"
VAT = "DE123456789"
INVOICE_URL = "https://invoice.stripe.com/i/acct_1/test_YWNjdF8xLF9QSUlfc2VjcmV0X2xpbms"


def stored(app, event_id: str) -> str:
    with app.app_context():
        return db.session.scalar(db.select(WebhookEvent.payload).where(WebhookEvent.event_id == event_id))


def failed_intent(payment_method: dict) -> dict:
    return {"id": "pi_rt", "object": "payment_intent", "amount": 1500, "currency": "usd", "customer": "cus_rt",
            "last_payment_error": {"code": "payment_method_not_available", "payment_method": payment_method}}


def test_a_failed_sepa_debit_is_stored_without_bank_details(app, client):
    method = {"id": "pm_rt", "object": "payment_method", "type": "sepa_debit",
              "sepa_debit": {"bank_code": BANK_CODE, "branch_code": "", "country": "DE",
                             "fingerprint": FINGERPRINT, "last4": IBAN_LAST4}}
    event = make_event("payment_intent.payment_failed", failed_intent(method))
    assert post(client, event).status_code == 200
    payload = stored(app, event["id"])
    found = [value for value in (BANK_CODE, FINGERPRINT, IBAN_LAST4) if value in payload]
    assert not found, f"the stored payment_intent.payment_failed keeps SEPA details {found}: {payload}"


def test_a_failed_us_bank_account_is_stored_without_account_details(app, client):
    method = {"id": "pm_rt2", "object": "payment_method", "type": "us_bank_account",
              "us_bank_account": {"account_holder_type": "individual", "bank_name": "STRIPE TEST BANK",
                                  "fingerprint": FINGERPRINT, "last4": ACCOUNT_LAST4, "routing_number": ROUTING}}
    event = make_event("payment_intent.payment_failed", failed_intent(method))
    assert post(client, event).status_code == 200
    payload = stored(app, event["id"])
    found = [value for value in (ROUTING, ACCOUNT_LAST4, FINGERPRINT) if value in payload]
    assert not found, f"the stored event keeps bank account details {found}"


def test_a_failed_link_or_paypal_payment_is_stored_without_the_payers_email(app, client):
    for kind, details in (("link", {"email": EMAIL}), ("paypal", {"payer_email": EMAIL, "payer_name": NAME})):
        method = {"id": f"pm_{kind}", "object": "payment_method", "type": kind, kind: details}
        event = make_event("payment_intent.payment_failed", failed_intent(method))
        assert post(client, event).status_code == 200
        payload = stored(app, event["id"])
        assert EMAIL not in payload, f"a failed {kind} payment keeps the payer's email: {payload}"


def test_customer_updated_does_not_keep_the_former_email_and_name(app, client):
    event = make_event("customer.updated", customer("cus_prev", user_id="user-prev", email="new@example.com"))
    event["data"]["previous_attributes"] = {"email": EMAIL, "name": NAME}
    assert post(client, event).status_code == 200
    payload = stored(app, event["id"])
    assert json.loads(payload)["data"]["object"]["email"] == "new@example.com"  # what the handler reads
    assert EMAIL not in payload and NAME not in payload, f"the former email and name are kept: {payload}"


def test_an_invoice_is_stored_without_tax_ids_or_its_bearer_links(app, client):
    invoice = {"id": "in_rt", "object": "invoice", "amount_due": 900, "amount_paid": 900, "currency": "usd",
               "customer": "cus_rt", "payment_intent": "pi_rt_inv",
               "customer_tax_ids": [{"type": "eu_vat", "value": VAT}],
               "hosted_invoice_url": INVOICE_URL, "invoice_pdf": INVOICE_URL + "/pdf"}
    event = make_event("invoice.paid", invoice)
    assert post(client, event).status_code == 200
    payload = stored(app, event["id"])
    found = [value for value in (VAT, INVOICE_URL) if value in payload]
    assert not found, f"the stored invoice.paid keeps {found}"


def test_a_customer_event_for_a_customer_not_ours_is_stored_without_contact_details(app, client):
    """A handled type, but the handler ignores it (no kamiyo_user_id: another product's customer
    on the same Stripe account): nothing of it is used, yet its email and name are kept."""
    event = make_event("customer.created", customer("cus_foreign", user_id=None, email=EMAIL) | {"name": NAME})
    answer = post(client, event)
    assert answer.get_json() == {"status": "ignored"}, answer.get_json()
    payload = stored(app, event["id"])
    assert EMAIL not in payload and NAME not in payload, f"a foreign customer's email and name are kept: {payload}"


def test_customer_deleted_is_stored_without_the_deleted_customers_email_and_name(app, client):
    assert post(client, make_event("customer.created", customer("cus_gone", user_id="user-gone"),
                                   created=1_790_000_000)).status_code == 200
    event = make_event("customer.deleted", customer("cus_gone", user_id="user-gone", email=EMAIL) | {"name": NAME},
                       created=1_790_000_100)
    assert post(client, event).status_code == 200
    payload = stored(app, event["id"])
    assert EMAIL not in payload and NAME not in payload, f"a deleted customer's email and name are kept: {payload}"


def test_every_handled_type_has_a_schema():
    """A new handler without one would have its events stored as ids only: its replay would do nothing."""
    assert set(minimise.SCHEMAS) == set(handlers.HANDLERS)


def test_a_customer_ignored_then_linked_keeps_its_later_events_contact_details(app, client):
    """Stripping an ignored event's contact details leaves the customer's own later events alone."""
    foreign = make_event("customer.created", customer("cus_later", user_id=None, email=EMAIL), created=1_790_000_000)
    assert post(client, foreign).get_json() == {"status": "ignored"}
    ours = make_event("customer.updated", customer("cus_later", user_id="user-later", email=EMAIL),
                      created=1_790_000_100)
    assert post(client, ours).get_json() == {"status": "processed"}
    assert EMAIL not in stored(app, foreign["id"])
    assert json.loads(stored(app, ours["id"]))["data"]["object"]["email"] == EMAIL
