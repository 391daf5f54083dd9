"""`report`'s duplicate-subscription target once the duplicate is resolved.

The runbook's fix for a flagged duplicate is to cancel it on Stripe (the command reconcile
prints). After that cancellation's webhook the duplicate is cancelled in our database too, and
no longer misses the target: a pipeline gating on the report would otherwise block every
release after it."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Subscription
from kamiyo.release.report import build_report
from tests.payments.workers import API, new_customer
from tests.support import FAST_RETRIES, make_key
from tests.webhooks.stripe_signing import make_event, post


def test_a_cancelled_duplicate_no_longer_misses_the_report_target(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"rt-{uuid.uuid4().hex[:10]}")
    body = {"customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    original = client.post(f"{API}/subscriptions", json=body, headers=headers)
    assert original.status_code == 201, original.get_json()

    second = localstripe.v1.subscriptions.create(params={"customer": customer["stripe_customer_id"],
                                                         "items": [{"plan": plan_id}]}).to_dict()
    assert post(client, make_event("customer.subscription.created", second)).status_code == 200
    with app.app_context():
        assert db.session.scalar(select(Subscription.duplicate_of).where(
            Subscription.stripe_subscription_id == second["id"])) is not None
        checks, _ = build_report("1h")
        assert {c.name: c.status for c in checks}["duplicate subscriptions"] == "fail"
        db.session.remove()

    # The fix: cancel the duplicate on Stripe; its webhook arrives.
    gone = localstripe.v1.subscriptions.cancel(second["id"]).to_dict()
    assert gone["status"] == "canceled"
    assert post(client, make_event("customer.subscription.deleted", gone)).status_code == 200
    with app.app_context():
        stored = db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == second["id"]))
        assert stored.status == "canceled"
        checks, numbers = build_report("1h")
        db.session.remove()
    duplicates = {c.name: c for c in checks}["duplicate subscriptions"]
    assert duplicates.status == "ok", (duplicates, numbers["duplicate_subscriptions"])
