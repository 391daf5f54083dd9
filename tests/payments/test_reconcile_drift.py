"""What reconcile takes from Stripe's objects (the tier, our customer, the status and period,
the parameters a resumed create would send), what its daily summary and alerts say, and what a
client is told of a customer Stripe no longer holds."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from sqlalchemy import select, update

from kamiyo.extensions import db
from kamiyo.models import Customer, DeletedStripeCustomer, Subscription, utcnow
from kamiyo.payments import customers
from kamiyo.payments.models import PaymentOperation
from kamiyo.payments.reconcile import reconcile_customers, reconcile_daily, reconcile_subscriptions
from kamiyo.payments.retention import CLEARED_PARAMS
from kamiyo.payments.subscriptions import alert_duplicate
from kamiyo.stripe_objects import subscription_period_end
from tests.payments.workers import API, new_customer
from tests.support import FAST_RETRIES, both_databases, make_key, wait_until

pytestmark = both_databases

LONG_AGO = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)


def _user() -> str:
    return f"d-{uuid.uuid4().hex[:10]}"


def _row(stripe_subscription_id: str) -> Subscription:
    return db.session.scalar(select(Subscription).where(Subscription.stripe_subscription_id == stripe_subscription_id))


def _subscribed(app, plan_id) -> tuple[dict, dict]:
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    ours = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}).get_json()
    return customer, ours


def _behind_our_back(localstripe, customer: dict, tier: str):
    product = localstripe.v1.products.create(params={"name": "Team"})
    team = localstripe.v1.plans.create(params={"product": product.id, "amount": 900, "currency": "usd",
                                               "interval": "month", "id": f"price_team_{uuid.uuid4().hex[:8]}"})
    return localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": team.id}],
        "metadata": {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": tier}})


def test_the_daily_run_adopts_with_the_tier_stripe_holds_and_says_so(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    customer, _ = _subscribed(app, plan_id)
    made = _behind_our_back(localstripe, customer, "team-x")
    with app.app_context():
        summary = reconcile_daily()
        assert set(summary) == {"customers", "subscriptions_adopted", "status_fixed", "duplicates", "drift"}
        assert summary["subscriptions_adopted"] >= 1
        row = _row(made.id)
        assert (row.customer_id, row.tier, row.status) == (customer["id"], "team-x", "active")


def test_a_subscription_of_a_deleted_customer_is_adopted_for_the_customer_its_metadata_names(
        make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    customer, _ = _subscribed(app, plan_id)
    made = _behind_our_back(localstripe, customer, "team")
    with app.app_context():
        # The customer's deletion was applied here (unlinked) before the listing came.
        db.session.add(DeletedStripeCustomer(stripe_customer_id=customer["stripe_customer_id"], deleted_at=utcnow()))
        db.session.execute(update(Customer).where(Customer.id == customer["id"]).values(stripe_customer_id=None))
        db.session.commit()
        reconcile_subscriptions()
        row = _row(made.id)
        assert row is not None and row.customer_id == customer["id"]


def test_a_drifted_status_takes_stripes_status_and_period(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    _, ours = _subscribed(app, plan_id)
    with app.app_context():
        db.session.execute(update(Subscription).where(Subscription.id == ours["id"]).values(
            status="past_due", current_period_end=LONG_AGO))
        db.session.commit()
        report = reconcile_subscriptions()
        assert report.status_fixed == 1
        row = db.session.get_one(Subscription, ours["id"])
        held = localstripe.v1.subscriptions.retrieve(ours["stripe_subscription_id"]).to_dict()
        assert row.status == "active"
        assert row.current_period_end == subscription_period_end(held) != LONG_AGO


def test_a_listing_older_than_a_webhook_applied_since_fixes_nothing(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    _, ours = _subscribed(app, plan_id)
    gateway = app.extensions["stripe_gateway"]
    retrieve = gateway.retrieve_subscription

    def webhook_meanwhile(*args, **kwargs):
        # Stripe's answer arrives after the webhook it matches was applied: no emulator times that.
        answer = retrieve(*args, **kwargs)
        with db.engine.begin() as connection:
            connection.execute(update(Subscription).where(Subscription.id == ours["id"]).values(status="active"))
        return answer

    gateway.retrieve_subscription = webhook_meanwhile
    with app.app_context():
        db.session.execute(update(Subscription).where(Subscription.id == ours["id"]).values(
            status="past_due", current_period_end=LONG_AGO))
        db.session.commit()
        report = reconcile_subscriptions()
        assert report.status_fixed == 0
        row = db.session.get_one(Subscription, ours["id"])
        assert (row.status, row.current_period_end) == ("active", LONG_AGO)


def test_a_failed_create_with_cleared_parameters_is_resumable_with_the_stripe_customers_own(
        make_app, proxy, localstripe):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    user = _user()
    email = f"{user}@example.com"
    with app.app_context():
        db.session.add(PaymentOperation(operation=customers.OPERATION, scope=f"{customers.OPERATION}:{user}",
                                        user_id=user, params_json=CLEARED_PARAMS, status="failed"))
        db.session.commit()
    made = localstripe.v1.customers.create(params={"email": email, "name": "Ada Lovelace",
                                                   "metadata": {"kamiyo_user_id": user}})
    with app.app_context():
        reconcile_customers()
        linked = db.session.scalar(select(Customer).where(Customer.user_id == user))
        assert linked is not None and linked.stripe_customer_id == made.id
        op = db.session.scalar(select(PaymentOperation).where(PaymentOperation.user_id == user))
        assert json.loads(op.params_json) == customers.create_params(user, email, "Ada Lovelace")


def test_the_duplicate_alert_names_both_subscriptions(make_app, slack):
    url, alerts = slack
    app = make_app(ALERT_WEBHOOK_URL=url)
    with app.app_context():
        customer = Customer(user_id=_user(), email="dup@example.com", stripe_customer_id="cus_alert")
        db.session.add(customer)
        db.session.flush()
        kept = Subscription(customer_id=customer.id, price_id="price_a", tier="pro", status="active",
                            stripe_subscription_id="sub_kept")
        db.session.add(kept)
        db.session.flush()
        second = Subscription(customer_id=customer.id, price_id="price_a", tier="pro", status="active",
                              stripe_subscription_id="sub_second", duplicate_of=kept.id)
        db.session.add(second)
        db.session.commit()
        customer_id = customer.id
        alert_duplicate(second)
    wait_until(lambda: alerts)
    text = alerts[0]["attachments"][0]["text"]
    assert f"Stripe subscription sub_second duplicates sub_kept (customer {customer_id}, price price_a)" in text


def test_the_report_keeps_the_subscription_we_hold_whatever_stripe_lists_first(make_app, proxy, localstripe,
                                                                                plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    customer = new_customer(app.test_client(), make_key(app), _user())
    card = localstripe.v1.payment_methods.attach("pm_card_visa", params={"customer": customer["stripe_customer_id"]})
    localstripe.v1.customers.update(customer["stripe_customer_id"],
                                    params={"invoice_settings": {"default_payment_method": card.id}})
    metadata = {"kamiyo_customer_id": str(customer["id"]), "kamiyo_tier": "pro"}
    # The older one is the one we never stored: adopted, it is flagged, and listed first.
    older, held = (localstripe.v1.subscriptions.create(params={
        "customer": customer["stripe_customer_id"], "items": [{"plan": plan_id}], "metadata": metadata})
        for _ in range(2))
    with app.app_context():
        row = Subscription(customer_id=customer["id"], price_id=plan_id, tier="pro", status="active",
                           stripe_subscription_id=held.id)
        db.session.add(row)
        db.session.commit()
        row_id = row.id
        report = reconcile_subscriptions()
        assert _row(older.id).duplicate_of == row_id
        assert [(d["subscription"], d["duplicate_of"], d["command"]) for d in report.duplicates
                if d["customer_id"] == customer["id"]] == [
            (older.id, held.id, f"flask --app wsgi payments cancel-subscription {older.id}")]


def test_an_adopted_customer_is_stored_as_stripe_holds_it_not_as_the_failed_request_asked(
        make_app, proxy, localstripe):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    user = _user()
    asked = customers.create_params(user, f"{user}@old.example.com", "Old Name")
    with app.app_context():
        db.session.add(PaymentOperation(operation=customers.OPERATION, scope=f"{customers.OPERATION}:{user}",
                                        user_id=user, params_json=json.dumps(asked), status="failed"))
        db.session.commit()
    # Changed on Stripe since (the dashboard, a support agent).
    made = localstripe.v1.customers.create(params={"email": f"{user}@new.example.com", "name": "New Name",
                                                   "metadata": {"kamiyo_user_id": user}})
    with app.app_context():
        reconcile_customers()
        linked = db.session.scalar(select(Customer).where(Customer.user_id == user))
        assert (linked.stripe_customer_id, linked.email, linked.name) == (
            made.id, f"{user}@new.example.com", "New Name")


def test_a_customer_gone_from_stripe_is_told_what_happened_and_what_to_do(make_app, proxy, localstripe, plan_id):
    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    headers, client = make_key(app), app.test_client()
    customer = new_customer(client, headers, _user())
    localstripe.v1.customers.delete(customer["stripe_customer_id"])  # no webhook reaches us
    answer = client.post(f"{API}/subscriptions", headers=headers, json={
        "customer_id": customer["id"], "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"})
    assert answer.status_code == 409
    error = answer.get_json()["error"]
    assert (error["code"], error["message"], error["user_action"]) == (
        "customer_missing_on_stripe",
        "This customer is no longer on the Stripe account this service uses.",
        "Contact support and quote the support id: the customer must be created again on Stripe.",
    )
