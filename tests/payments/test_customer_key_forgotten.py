"""a customer create whose reply was lost, retried after Stripe forgot its idempotency
key (about 24 h), makes a second Stripe customer for the user."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import update

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.payments.models import PaymentOperation
from tests.support import FAST_RETRIES, both_databases, make_key, stripe_customers_for

CUSTOMERS = "/api/v1/payments/customers"


@both_databases
def test_a_customer_create_retried_after_stripe_forgot_its_key_makes_no_second_customer(make_app, proxy,
                                                                                       localstripe):
    """Sequence:

    1. POST /customers: Stripe makes customer C1, every reply is lost (3 x drop_after): 503.
       The operation stays `pending` at recovery point `claimed`, generation 0, lease released.
    2. C1's customer.created webhook is not applied (the webhook endpoint is failing, e.g. after
       a bad secret rotation; Stripe keeps retrying for 3 days).
    3. More than 24 h later the client retries. Stripe has forgotten the idempotency key
       (emulated: the proxy's key store is cleared; the operation's timestamps moved back 25 h).

    customers._create only looks on Stripe for a customer of ours (`_ours_on_stripe`) when
    `run.generation > 0`; at generation 0 it replays the create with the old key, unlike
    subscriptions._replay_create which asks Stripe first once the create is older than
    STRIPE_KEY_MEMORY. Customers have no `create_sent` recovery point nor age check at all, so the
    forgotten key makes customer C2: two Stripe customers for one user.
    """
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user_id = f"rt-{uuid.uuid4().hex[:10]}"
    request = {"user_id": user_id, "email": f"{user_id}@example.com"}

    proxy.add_faults(*[Fault("drop_after", method="POST", path=r"^/v1/customers$")] * 3)
    first = client.post(CUSTOMERS, json=request, headers=headers)
    assert first.status_code == 503, first.get_json()
    assert len(stripe_customers_for(localstripe, user_id)) == 1

    # A day and more goes by; Stripe prunes the idempotency key.
    with app.app_context():
        day_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=25)
        db.session.execute(update(PaymentOperation).where(PaymentOperation.user_id == user_id).values(
            created_at=day_ago, updated_at=day_ago, recovery_point_at=day_ago, lease_expires_at=day_ago))
        db.session.commit()
    proxy.clear()

    retried = client.post(CUSTOMERS, json=request, headers=headers)
    assert retried.status_code in (200, 201), retried.get_json()
    made = [c.id for c in stripe_customers_for(localstripe, user_id)]
    assert len(made) == 1, f"Stripe holds {len(made)} customers for one user: {made}"
