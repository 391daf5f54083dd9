"""on PostgreSQL, the subscription create's last phase races its own
customer.subscription.created webhook and answers a bare 500."""

from __future__ import annotations

import threading
import time
import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Subscription
from tests.payments.workers import API, Stall, in_thread, new_customer
from tests.support import FAST_RETRIES, make_key, postgresql_only
from tests.webhooks.stripe_signing import make_event, post

SUBSCRIPTIONS = f"{API}/subscriptions"


@postgresql_only
def test_the_subscription_webhook_committing_during_finish_is_no_500(make_app, proxy, localstripe, plan_id,
                                                                     monkeypatch):
    """Sequence (PostgreSQL, READ COMMITTED):

    1. POST /subscriptions: Stripe makes S; our worker has the reply and goes on to `finished`.
    2. Meanwhile S's customer.subscription.created arrives; its handler (_first_news) has
       INSERTed S's row and its batch transaction has not committed yet (a batch of many events,
       a slow fsync: here it is held between the handler and the commit).
    3. subscriptions.store() SELECTs S's row (not visible: uncommitted), sees no live
       subscription, INSERTs its own row for S, and waits on the unique index.
    4. The webhook commits: our INSERT fails with a unique violation (stripe_subscription_id and
       the live customer+price index).

    customers.finish retries its phase on IntegrityError; subscriptions._finish does not
    (subscriptions.py `_finish` -> phases.finish -> store), so the IntegrityError escapes to
    http_errors.handle_unexpected: the client gets a 500 "internal_error" (not a 502/503), for
    a subscription that exists and is billed.
    """
    from kamiyo.webhooks import inbox

    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"rt-{uuid.uuid4().hex[:10]}")
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}

    stall = Stall(app, "create_subscription")  # S made on Stripe; our finish not run yet
    thread, answers = in_thread(lambda: client.post(SUBSCRIPTIONS, json=body, headers=headers))
    assert stall.reached.wait(10)
    [made] = [s.to_dict() for s in localstripe.v1.subscriptions.list(
        params={"customer": customer["stripe_customer_id"], "status": "all"}).data]

    # The webhook's transaction: row inserted by the handler, commit not done yet.
    original_set_status = inbox._set_status
    inserted, release = threading.Event(), threading.Event()

    def slow_commit(*args, **kwargs):
        inserted.set()
        assert release.wait(30)
        return original_set_status(*args, **kwargs)

    monkeypatch.setattr(inbox, "_set_status", slow_commit)
    hook_thread, hook_answers = in_thread(
        lambda: post(app.test_client(), make_event("customer.subscription.created", made)))
    assert inserted.wait(10)

    stall.resume()
    time.sleep(1.0)  # our store() is now waiting for the webhook's transaction
    release.set()
    hook_thread.join(30)
    thread.join(30)
    assert hook_answers[0].status_code == 200, hook_answers[0].get_json()
    [answer] = answers
    assert answer.status_code in (200, 201), (answer.status_code, answer.get_json())
    with app.app_context():
        assert db.session.scalar(select(Subscription.id).where(Subscription.stripe_subscription_id == made["id"]))
