"""A new Stripe key is never sent before asking Stripe whether the object already exists;
a stored error is not an outage; reconcile leaves a running operation alone; a resumed
operation speaks of the customer it started with."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.payments import phases
from kamiyo.stripe_gateway.gateway import get_gateway
from kamiyo.payments.models import PaymentOperation
from tests.support import FAST_RETRIES, both_databases, make_key, stripe_customers_for
from tests.payments.workers import API, live_stripe_subscriptions, new_customer

pytestmark = both_databases

CUSTOMERS, SUBSCRIPTIONS = f"{API}/customers", f"{API}/subscriptions"


def _user() -> str:
    return f"a-{uuid.uuid4().hex[:10]}"


def test_a_stored_500_is_not_an_outage_and_the_next_key_is_used_after_asking_stripe(make_app, proxy, localstripe):
    app = make_app(STRIPE_API_BASE=proxy.url, BREAKER_FAIL_MAX=1, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = _user()
    # Stripe stored a 500 for the first key: every retry with that key gets it again.
    proxy.add_faults(Fault("status", 500, stored=True, path=r"^/v1/customers$"))
    answer = client.post(CUSTOMERS, json={"user_id": user, "email": f"{user}@example.com"}, headers=headers)
    assert answer.status_code == 201, answer.get_json()
    posts = proxy.requests_to("POST", r"^/v1/customers$")
    assert [r.outcome for r in posts] == ["fault:status", "replayed", "forwarded"]
    assert posts[0].idempotency_key == posts[1].idempotency_key != posts[2].idempotency_key
    # Between the replayed error and the new key, Stripe was asked (search, or the email listing).
    asked = [r for r in proxy.requests if r.method == "GET" and r.path.startswith("/v1/customers")]
    assert asked and asked[0].started_at < posts[2].started_at
    with app.app_context():
        breaker = get_gateway().breaker
        assert breaker.current_state == "closed" and breaker.failures() == 0
    assert len(stripe_customers_for(localstripe, user)) == 1


def test_a_later_generation_adopts_the_customer_stripe_already_holds(make_app, proxy, localstripe):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = _user()
    body = {"user_id": user, "email": f"{user}@example.com"}
    proxy.add_faults(Fault("status", 400, error_type="invalid_request_error", path=r"^/v1/customers$"))
    assert client.post(CUSTOMERS, json=body, headers=headers).status_code == 400  # generation 0 failed
    # A customer of ours exists on Stripe all the same (a worker we lost track of made it).
    made = localstripe.v1.customers.create(params={"email": body["email"], "metadata": {"kamiyo_user_id": user}})
    proxy.clear_requests()
    answer = client.post(CUSTOMERS, json=body, headers=headers)
    assert answer.status_code == 201 and answer.get_json()["stripe_customer_id"] == made.id
    assert proxy.requests_to("POST", r"^/v1/customers$") == []  # adopted, nothing created
    assert len(stripe_customers_for(localstripe, user)) == 1


def test_a_later_generation_adopts_the_live_subscription_stripe_already_holds(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    proxy.add_faults(Fault("status", 402, path=r"^/v1/subscriptions$"))
    assert client.post(SUBSCRIPTIONS, json=body, headers=headers).status_code == 402  # generation 0 declined
    made = localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": plan_id}],
        "metadata": {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}})
    proxy.clear_requests()
    answer = client.post(SUBSCRIPTIONS, json=body, headers=headers)
    assert answer.status_code == 201 and answer.get_json()["stripe_subscription_id"] == made.id
    assert proxy.requests_to("POST", r"^/v1/subscriptions$") == []
    listing = proxy.requests_to("GET", r"^/v1/subscriptions$")
    assert listing and listing[0].form["customer"] == customer["stripe_customer_id"] and \
        listing[0].form["status"] == "all"
    assert [s["id"] for s in live_stripe_subscriptions(localstripe, customer["stripe_customer_id"])] == [made.id]


def test_reconcile_leaves_an_operation_that_a_request_owns_alone(make_app, proxy, localstripe):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    user = _user()
    params = {"email": f"{user}@example.com", "metadata": {"kamiyo_user_id": user}}
    with app.app_context():  # a request claimed it and Stripe made the customer; it has not stored it yet
        run = phases.acquire("customer.create", f"customer.create:{user}", user, params, "busy-request").run
        get_gateway().create_customer(params, run.key)
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["payments", "reconcile"])
    assert result.exit_code == 0 and "1 in progress" in result.output, result.output
    with app.app_context():
        op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.scope == f"customer.create:{user}"))
        assert (op.owner_token, op.status, op.recovery_point) == ("busy-request", "pending", "claimed")
        assert db.session.scalar(select(Customer).where(Customer.user_id == user)) is None


def test_a_resumed_subscription_speaks_of_the_customer_it_started_with(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    started_with = customer["stripe_customer_id"]
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    proxy.add_faults(*[Fault("status", 503, path=r"^/v1/customers/cus_[^/]+$")] * 3)  # setting the default fails
    assert client.post(SUBSCRIPTIONS, json=body, headers=headers).status_code == 502
    # Our row now names another Stripe customer (as after a deletion and a new create).
    other = localstripe.v1.customers.create(params={"email": "other@example.com"}).id
    with app.app_context():
        db.session.execute(update(Customer).where(Customer.id == customer["id"]).values(stripe_customer_id=other))
        db.session.commit()
    proxy.clear_requests()
    client.post(SUBSCRIPTIONS, json=body, headers=headers)
    named = [r.form.get("customer") or r.path.split("/")[3] for r in proxy.requests if r.method == "POST"]
    assert named and set(named) == {started_with}, named
