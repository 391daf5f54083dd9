"""What a client and an operator are told, word for word: a price Stripe does not hold, an
Idempotency-Key reused for another request, a customer adopted instead of made again,
an expired key used again, a repeated create answered from our row, an unknown customer,
a subscription create that lost the race to an identical one."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import update

from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.payments.models import ClientIdempotencyKey
from tests.payments.workers import API, Stall, in_thread, new_customer
from tests.support import FAST_RETRIES, make_key


def _user() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_an_unknown_price_is_explained(make_app, proxy):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    answer = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": f"price_none_{uuid.uuid4().hex[:8]}", "tier": "pro",
        "payment_method": "pm_card_visa"})
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert (error["code"], error["message"], error["user_action"], error["param"]) == (
        "price_not_found",
        "There is no active price with this id.",
        "Check price_id: it must be an active price of the Stripe account this service uses.",
        "price_id",
    )


def test_an_idempotency_key_reused_for_another_request_is_explained(make_app, proxy):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    user = _user()
    first = client.post(f"{API}/customers", headers=headers, json={"user_id": user, "email": f"{user}@example.com"})
    assert first.status_code == 201, first.get_json()
    other = client.post(f"{API}/customers", headers=headers, json={"user_id": user, "email": f"{user}@other.example"})
    assert other.status_code == 422
    error = other.get_json()["error"]
    assert (error["code"], error["message"], error["user_action"]) == (
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request.",
        "Use a new Idempotency-Key for a different request.",
    )


def test_the_adopted_stripe_customer_is_named_in_the_log(make_app, proxy, localstripe, caplog):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = _user()
    body = {"user_id": user, "email": f"{user}@example.com"}
    proxy.add_faults(Fault("status", 400, error_type="invalid_request_error", path=r"^/v1/customers$"))
    assert client.post(f"{API}/customers", json=body, headers=headers).status_code == 400
    made = localstripe.v1.customers.create(params={"email": body["email"], "metadata": {"kamiyo_user_id": user}})
    with caplog.at_level(logging.INFO, logger="kamiyo.payments.customers"):
        answer = client.post(f"{API}/customers", json=body, headers=headers)
    assert answer.status_code == 201 and answer.get_json()["stripe_customer_id"] == made.id
    assert any(r.name == "kamiyo.payments.customers" and r.getMessage().endswith(f"adopts Stripe customer {made.id}")
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_an_expired_idempotency_key_not_yet_purged_takes_a_new_request(make_app, proxy):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    headers = {**headers, "Idempotency-Key": str(uuid.uuid4())}
    first, second = _user(), _user()
    assert client.post(f"{API}/customers", headers=headers,
                       json={"user_id": first, "email": f"{first}@example.com"}).status_code == 201
    with app.app_context():
        db.session.execute(update(ClientIdempotencyKey).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        db.session.commit()
    answer = client.post(f"{API}/customers", headers=headers, json={"user_id": second, "email": f"{second}@example.com"})
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["user_id"] == second


def test_a_repeated_create_is_logged_with_its_operation(make_app, proxy, caplog):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    with caplog.at_level(logging.INFO, logger="kamiyo.payments.idempotency"):
        again = client.post(f"{API}/customers", headers=headers,
                            json={"user_id": customer["user_id"], "email": customer["email"]})
    assert again.status_code == 200, again.get_json()
    assert f"IDEMPOTENCY customer.create: returning existing customer_id={customer['id']}" in [
        r.getMessage() for r in caplog.records]


def test_an_unknown_customer_is_explained(make_app):
    app = make_app()
    answer = app.test_client().get(f"{API}/customers/999999", headers=make_key(app))
    assert answer.status_code == 404
    error = answer.get_json()["error"]
    assert (error["code"], error["message"], error["user_action"]) == (
        "customer_not_found", "No customer with this id.", "Check the customer id.")



def test_a_create_that_lost_the_race_answers_the_winners_subscription(make_app, proxy, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    # The first request stalls after its price lookup, before it claims the operation.
    stall = Stall(app, "retrieve_price")
    thread, out = in_thread(lambda: app.test_client().post(f"{API}/subscriptions", headers=headers, json=body))
    assert stall.reached.wait(30)
    winner = client.post(f"{API}/subscriptions", headers=headers, json=body)
    assert winner.status_code == 201, winner.get_json()
    stall.resume()
    thread.join(30)
    [late] = out
    assert late.status_code == 200, late.get_json()
    assert late.get_json()["id"] == winner.get_json()["id"]
