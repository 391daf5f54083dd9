"""an error Stripe stored for the key of a preparatory step (attaching the card) is
replayed to every later attempt of the operation: the customer cannot subscribe for 24 hours."""

from __future__ import annotations

import uuid

from devtools.stripe_proxy import Fault
from tests.payments.workers import API, new_customer
from tests.support import SHORT_LEASE, both_databases, make_key

SUBSCRIPTIONS = f"{API}/subscriptions"


@both_databases
def test_a_stored_500_on_the_card_attach_does_not_block_the_subscription_for_a_day(make_app, proxy, plan_id):
    """Stripe answers the attach with a 500 that it stores for the step's key; our retry gets
    it replayed. Before, the operation was wedged for Stripe's ~24 h key memory (every resume
    sent the same step key); now the next generation's keys are used at once."""
    app = make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"rt-{uuid.uuid4().hex[:10]}")
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    proxy.add_faults(Fault("status", 500, path=r"^/v1/payment_methods/.*/attach$", stored=True))
    answer = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    attaches = proxy.requests_to("POST", r"^/v1/payment_methods/.*/attach$")
    assert [r.outcome for r in attaches] == ["fault:status", "replayed", "forwarded"]
    assert attaches[0].idempotency_key == attaches[1].idempotency_key != attaches[2].idempotency_key
