"""`payments reconcile --subscriptions`: every live Stripe subscription of ours against our rows."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import Subscription
from tests.support import FAST_RETRIES, both_databases, make_key
from tests.payments.workers import API, new_customer

pytestmark = both_databases


def test_reconcile_adopts_flags_duplicates_and_prints_the_command_without_cancelling(make_app, proxy, localstripe,
                                                                                    plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client, runner = make_key(app), app.test_client(), app.test_cli_runner()
    customer = new_customer(client, headers, f"r-{uuid.uuid4().hex[:10]}")
    ours = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}).get_json()
    # Two more on Stripe with our metadata, behind our back: one to another price, one duplicate.
    product = localstripe.v1.products.create(params={"name": "Team"})
    team = localstripe.v1.plans.create(params={"product": product.id, "amount": 900, "currency": "usd",
                                               "interval": "month", "id": f"price_team_{uuid.uuid4().hex[:8]}"})
    metadata = {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}
    unknown = localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": team.id}], "metadata": metadata})
    duplicate = localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": plan_id}], "metadata": metadata})

    # localstripe is shared by the whole session: the counts include other tests' objects, so
    # only what concerns this test's customer is checked.
    result = runner.invoke(args=["payments", "reconcile", "--subscriptions"])
    assert result.exit_code == 1, result.output  # a duplicate: a cron mail or a pipeline notices
    assert f"DUPLICATE {duplicate.id} duplicates {ours['stripe_subscription_id']}" in result.output
    assert f"    flask --app wsgi payments cancel-subscription {duplicate.id}" in result.output
    with app.app_context():
        rows = {r.stripe_subscription_id: (r.status, r.price_id, r.duplicate_of)
                for r in db.session.scalars(select(Subscription).where(Subscription.customer_id == customer["id"]))}
    assert rows == {ours["stripe_subscription_id"]: ("active", plan_id, None),
                    unknown.id: ("active", team.id, None),
                    duplicate.id: ("active", plan_id, ours["id"])}
    assert localstripe.v1.subscriptions.retrieve(duplicate.id).status == "active"  # never cancelled on its own

    cancelled = runner.invoke(args=["payments", "cancel-subscription", duplicate.id, "--yes"])
    assert cancelled.exit_code == 0 and f"{duplicate.id}: canceled" in cancelled.output, cancelled.output
    assert localstripe.v1.subscriptions.retrieve(duplicate.id).status == "canceled"
    again = runner.invoke(args=["payments", "reconcile", "--subscriptions"])
    assert f"DUPLICATE {duplicate.id}" not in again.output, again.output


def test_cancel_subscription_asks_before_cancelling(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, f"r-{uuid.uuid4().hex[:10]}")
    ours = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}).get_json()
    refused = app.test_cli_runner().invoke(args=["payments", "cancel-subscription", ours["stripe_subscription_id"]],
                                           input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    assert localstripe.v1.subscriptions.retrieve(ours["stripe_subscription_id"]).status == "active"
