"""a customer operation resumed from its `created` recovery point links the user to a
Stripe customer that was deleted meanwhile, for good."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Customer, DeletedStripeCustomer
from tests.support import LEASE_SECONDS, SHORT_LEASE, both_databases, make_key
from tests.webhooks.stripe_signing import customer as customer_object
from tests.webhooks.stripe_signing import make_event, post

CUSTOMERS = "/api/v1/payments/customers"


@both_databases
def test_a_customer_deleted_after_phase_created_is_not_linked_again_on_resume(make_app, proxy, localstripe):
    """Sequence:

    1. Worker A claims `customer.create:<user>`, Stripe makes customer C, A commits the
       `created` recovery point (C's id on the operation) and dies before `finished`.
    2. C's `customer.created` webhook links our row to C.
    3. C is deleted on Stripe; `customer.deleted` is applied: our row is unlinked and C is
       recorded in deleted_stripe_customers ("never linked again").
    4. A's lease runs out; the client retries POST /customers.

    The retry resumes at `created` and goes straight to `customers.finish` -> `link()`, which
    links the user to C again without asking whether C was deleted (the `generation` check in
    customers._create and the `stripe_customer_deleted` check in subscriptions._finish have no
    twin on this path). No further event about C will ever come, so the row stays linked to a
    deleted customer for good: every later POST /customers answers the dead customer as
    `existing`, and every subscription for it fails on Stripe.
    """
    from kamiyo.payments import customers, phases

    app = make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)
    headers, client = make_key(app), app.test_client()
    user_id = f"rt-{uuid.uuid4().hex[:10]}"
    email = f"{user_id}@example.com"
    with app.app_context():
        # Worker A: the claim and the create phase, exactly as the API runs them; then it dies.
        params = {"email": email, "metadata": {"kamiyo_user_id": user_id}}
        claim = phases.acquire(customers.OPERATION, f"{customers.OPERATION}:{user_id}", user_id, params,
                               "worker-a-token", reopen=customers._unlinked)
        customers._create(claim.run)
        made = claim.run.stripe_object_id
        assert claim.run.recovery_point == customers.CREATED and made
        db.session.remove()

    stripe_customer = customer_object(made, user_id=user_id, email=email)
    assert post(client, make_event("customer.created", stripe_customer)).get_json() == {"status": "processed"}
    localstripe.v1.customers.delete(made)
    assert post(client, make_event("customer.deleted", {**stripe_customer, "deleted": True})).get_json() == {
        "status": "processed"}
    with app.app_context():
        assert db.session.scalar(select(Customer.stripe_customer_id).where(Customer.user_id == user_id)) is None
        assert db.session.scalar(select(DeletedStripeCustomer.id).where(
            DeletedStripeCustomer.stripe_customer_id == made)) is not None

    time.sleep(LEASE_SECONDS + 0.2)  # A's lease runs out
    answer = client.post(CUSTOMERS, json={"user_id": user_id, "email": email}, headers=headers)
    assert answer.status_code in (200, 201), answer.get_json()
    linked = answer.get_json()["stripe_customer_id"]
    # The user must end up with a live Stripe customer, never the one whose deletion we applied.
    assert linked != made, "the user was linked again to a Stripe customer deleted on Stripe"
    assert not localstripe.v1.customers.retrieve(linked).to_dict().get("deleted")
