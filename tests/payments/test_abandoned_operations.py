"""An operation left pending (its reply lost, its worker dead) whose object its webhook stored,
then deleted or cancelled: the next request must make a new one, not replay the old key."""

from __future__ import annotations

import time
import uuid

import pytest

from kamiyo.extensions import db
from kamiyo.models import Subscription
from tests.support import LEASE_SECONDS, SHORT_LEASE, make_key
from tests.webhooks.stripe_signing import customer as customer_object
from tests.webhooks.stripe_signing import make_event, post

CUSTOMERS, SUBSCRIPTIONS = "/api/v1/payments/customers", "/api/v1/payments/subscriptions"


@pytest.fixture
def app(make_app, proxy):
    # A lease that runs out within the test, as it would once the dead worker's has.
    return make_app(STRIPE_API_BASE=proxy.url, **SHORT_LEASE)


@pytest.mark.parametrize("asked_again_before_the_deletion", [True, False])
def test_a_customer_deleted_since_its_abandoned_create_is_made_anew(app, localstripe,
                                                                    asked_again_before_the_deletion):
    from kamiyo.payments import phases
    from kamiyo.stripe_gateway.gateway import get_gateway

    headers, client = make_key(app), app.test_client()
    user_id = f"u-{uuid.uuid4().hex[:10]}"
    request = {"user_id": user_id, "email": "f@example.com"}
    with app.app_context():  # claimed, and created on Stripe; the reply never comes back
        params = {"email": "f@example.com", "metadata": {"kamiyo_user_id": user_id}}
        claim = phases.acquire("customer.create", f"customer.create:{user_id}", user_id, params, "dead-worker")
        created = get_gateway().create_customer(params, claim.run.key)
        db.session.commit()
    first = customer_object(created["id"], user_id=user_id, email="f@example.com")
    assert post(client, make_event("customer.created", first)).get_json() == {"status": "processed"}
    time.sleep(LEASE_SECONDS + 0.1)  # the dead worker's lease runs out
    if asked_again_before_the_deletion:
        answer = client.post(CUSTOMERS, json=request, headers=headers)
        assert answer.status_code == 200 and answer.get_json()["stripe_customer_id"] == created["id"]
    localstripe.v1.customers.delete(created["id"])
    assert post(client, make_event("customer.deleted", {**first, "deleted": True})).get_json() == {
        "status": "processed"}

    answer = client.post(CUSTOMERS, json=request, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["stripe_customer_id"] not in (None, created["id"])


@pytest.mark.parametrize("asked_again_before_the_cancel", [True, False])
def test_a_subscription_cancelled_since_its_abandoned_create_is_made_anew(app, proxy, localstripe, plan_id,
                                                                         asked_again_before_the_cancel):
    from devtools.stripe_proxy import Fault

    headers, client = make_key(app), app.test_client()
    user_id = f"u-{uuid.uuid4().hex[:10]}"
    customer = client.post(CUSTOMERS, json={"user_id": user_id, "email": "s@example.com"}, headers=headers).get_json()
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    proxy.add_faults(*[Fault("drop_after", path=r"^/v1/subscriptions$")] * 5)  # every reply lost
    assert client.post(SUBSCRIPTIONS, json=body, headers=headers).status_code >= 500
    proxy.clear_faults()
    [made] = localstripe.v1.subscriptions.list(params={"customer": customer["stripe_customer_id"]}).data
    with app.app_context():  # its customer.subscription.created webhook stored it
        db.session.add(Subscription(customer_id=customer["id"], stripe_subscription_id=made.id, status="active",
                                    price_id=plan_id, tier="pro"))
        db.session.commit()
        row_id = db.session.scalar(db.select(Subscription.id).where(Subscription.stripe_subscription_id == made.id))
    time.sleep(LEASE_SECONDS + 0.1)  # the lease runs out
    if asked_again_before_the_cancel:
        answer = client.post(SUBSCRIPTIONS, json=body, headers=headers)
        assert answer.status_code == 200 and answer.get_json()["id"] == row_id
    assert client.post(f"{SUBSCRIPTIONS}/{row_id}/cancel", headers=headers).get_json()["status"] == "canceled"

    answer = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["status"] == "active" and answer.get_json()["id"] != row_id
