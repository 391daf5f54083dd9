"""A customer's webhook can store its row between our create's look for it and our insert:
the insert then breaks the unique user id, and the create answers with the webhook's row."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select

from kamiyo.extensions import db
from kamiyo.models import Customer
from kamiyo.payments import customers
from tests.payments.workers import API, Stall, in_thread
from tests.support import FAST_RETRIES, make_key, postgresql_only
from tests.webhooks.stripe_signing import customer, make_event, post


@postgresql_only
def test_a_row_stored_by_the_webhook_between_our_look_and_our_insert_is_the_answer(make_app, proxy, monkeypatch):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = f"race-{uuid.uuid4().hex[:10]}"
    real_link, real_flush = customers.link, db.session.flush
    raced: list = []

    def webhook_stores_it(stripe_customer):
        # Another worker's transaction, committed while ours has looked and not yet inserted.
        def deliver():
            with app.app_context():
                return post(app.test_client(), make_event("customer.created", stripe_customer)).get_json()

        thread, answers = in_thread(deliver)
        thread.join(30)
        raced.append(answers[0])

    def link(user_id, stripe_customer):
        if raced:
            return real_link(user_id, stripe_customer)

        def flush(*args, **kwargs):
            monkeypatch.setattr(db.session, "flush", real_flush)
            webhook_stores_it(stripe_customer)
            return real_flush(*args, **kwargs)

        monkeypatch.setattr(db.session, "flush", flush)
        return real_link(user_id, stripe_customer)

    monkeypatch.setattr(customers, "link", link)
    answer = client.post(f"{API}/customers", json={"user_id": user, "email": f"{user}@example.com"}, headers=headers)
    assert raced == [{"status": "processed"}]
    assert answer.status_code == 201, answer.get_json()
    with app.app_context():
        stored = db.session.scalars(select(Customer).where(Customer.user_id == user)).all()
        assert db.session.scalar(select(func.count(Customer.id)).where(Customer.user_id == user)) == 1
    assert [c.id for c in stored] == [answer.get_json()["id"]]
    assert stored[0].stripe_customer_id == answer.get_json()["stripe_customer_id"]


def test_another_stripe_customer_linked_meanwhile_is_kept_and_ours_left_to_reconcile(make_app, proxy, caplog):
    """While our create waits after Stripe made the customer, a webhook links the user to another
    Stripe customer carrying our metadata (made at Stripe's dashboard, say). The user keeps that
    one; ours is named for `payments reconcile`, never linked over it."""
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    user = f"other-{uuid.uuid4().hex[:10]}"
    stall = Stall(app, "create_customer")
    thread, answers = in_thread(lambda: client.post(
        f"{API}/customers", json={"user_id": user, "email": f"{user}@example.com"}, headers=headers))
    assert stall.reached.wait(30)
    other = customer(f"cus_other_{uuid.uuid4().hex[:8]}", user_id=user, email=f"{user}@example.com")
    assert post(app.test_client(), make_event("customer.created", other)).get_json() == {"status": "processed"}
    with caplog.at_level(logging.WARNING, logger="kamiyo.payments.customers"):
        stall.resume()
        thread.join(30)
    answer = answers[0]
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["stripe_customer_id"] == other["id"]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "kamiyo.payments.customers"]
    ours = warning.rsplit("; ", 1)[1].split(" ", 1)[0]
    assert ours.startswith("cus_") and ours != other["id"]
    assert warning == (f"user {user} already has Stripe customer {other['id']}; {ours} is left to "
                       "`payments reconcile`")
