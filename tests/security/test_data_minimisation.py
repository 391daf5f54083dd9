"""Keep only what we use: the webhook inbox stores no contact or payment details, and a
replay of what it stores gives the rows the whole event gave."""

from __future__ import annotations

import json

import pytest

from kamiyo.extensions import db
from kamiyo.models import Customer, DeletedStripeCustomer, Subscription
from kamiyo.webhooks import handlers
from kamiyo.webhooks.models import PaymentOutcome, WebhookEvent
from tests.support import both_databases, csrf_token, login, make_user
from tests.webhooks.stripe_signing import customer, make_event, post, subscription

pytestmark = both_databases

# What a charge and its payment method tell about the cardholder: none of it may be stored.
NAME, EMAIL, PHONE = "Grace Brewster Hopper", "grace.hopper@navy.example", "+1-555-0100-777"
LINE1, CITY, POSTAL = "17 Compiler Row", "Arlingtonshire", "ZX-22201"
BRAND, LAST4, EXP_YEAR, FINGERPRINT = "discover", "9876", 2037, "Fp9x2LkQ7mZqWv3T"
VAT, BANK_CODE = "DE987654321", "37040044"
INVOICE_URL = "https://invoice.stripe.com/i/acct_1/test_bearer_link_to_the_invoice"
PERSONAL = (NAME, EMAIL, PHONE, LINE1, CITY, POSTAL, BRAND, LAST4, str(EXP_YEAR), FINGERPRINT, VAT, BANK_CODE,
            INVOICE_URL)

ADDRESS = {"line1": LINE1, "line2": None, "city": CITY, "postal_code": POSTAL, "state": "VA", "country": "US"}
BILLING = {"name": NAME, "email": EMAIL, "phone": PHONE, "address": ADDRESS}
CARD = {"brand": BRAND, "last4": LAST4, "exp_month": 11, "exp_year": EXP_YEAR, "fingerprint": FINGERPRINT,
        "funding": "credit", "country": "US"}
SHIPPING = {"name": NAME, "phone": PHONE, "address": ADDRESS, "carrier": None}


def charge(charge_id: str, intent_id: str) -> dict:
    return {"id": charge_id, "object": "charge", "amount": 2900, "currency": "usd", "customer": "cus_pii",
            "payment_intent": intent_id, "paid": True, "status": "succeeded", "billing_details": BILLING,
            "payment_method": "pm_pii", "payment_method_details": {"type": "card", "card": CARD},
            "receipt_email": EMAIL, "shipping": SHIPPING, "metadata": {}}


def events() -> list[dict]:
    """A customer of ours, its subscription and payments, each carrying the details above."""
    created = 1_790_000_000
    pii_customer = customer("cus_pii", user_id="user-pii", email="kept@example.com", address=ADDRESS,
                            phone=PHONE, shipping=SHIPPING,
                            sources={"object": "list", "data": [{"id": "card_pii", "object": "card", **CARD,
                                                                 "name": NAME, "address_line1": LINE1}]})
    failed_intent = {"id": "pi_failed", "object": "payment_intent", "amount": 1500, "currency": "usd",
                     "customer": "cus_pii", "receipt_email": EMAIL, "shipping": SHIPPING,
                     "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                                            "payment_method": {"id": "pm_pii", "object": "payment_method",
                                                               "billing_details": BILLING, "card": CARD,
                                                               "sepa_debit": {"bank_code": BANK_CODE,
                                                                              "last4": LAST4}}}}
    updated = make_event("customer.updated", pii_customer, created=created + 5)
    updated["data"]["previous_attributes"] = {"email": EMAIL, "name": NAME, "phone": PHONE}
    return [
        make_event("customer.created", pii_customer, created=created),
        make_event("customer.subscription.created", subscription("sub_pii", "cus_pii", user_id="user-pii"),
                   created=created + 1),
        make_event("payment_intent.succeeded",
                   {"id": "pi_ok", "object": "payment_intent", "amount": 2900, "amount_received": 2900,
                    "currency": "usd", "customer": "cus_pii", "receipt_email": EMAIL, "shipping": SHIPPING,
                    "latest_charge": "ch_ok", "charges": {"object": "list", "data": [charge("ch_ok", "pi_ok")]}},
                   created=created + 2),
        make_event("invoice.paid",
                   {"id": "in_pii", "object": "invoice", "amount_due": 900, "amount_paid": 900, "currency": "usd",
                    "customer": "cus_pii", "payment_intent": "pi_invoice", "customer_email": EMAIL,
                    "customer_name": NAME, "customer_phone": PHONE, "customer_address": ADDRESS,
                    "customer_shipping": SHIPPING, "customer_tax_ids": [{"type": "eu_vat", "value": VAT}],
                    "hosted_invoice_url": INVOICE_URL, "invoice_pdf": INVOICE_URL + "/pdf"},
                   created=created + 3),
        make_event("payment_intent.payment_failed", failed_intent, created=created + 4),
        updated,
    ]


def stored_payloads(app) -> dict[str, str]:
    with app.app_context():
        return dict(db.session.execute(db.select(WebhookEvent.event_id, WebhookEvent.payload)).all())


def leaks(text: str) -> list[str]:
    return [value for value in PERSONAL if value.lower() in text.lower()]


def test_an_ignored_charge_is_stored_as_ids_and_type_only(app, client):
    event = make_event("charge.succeeded", charge("ch_pii", "pi_pii"))
    event["request"] = {"id": "req_pii", "idempotency_key": "k"}
    event["pending_webhooks"] = 1
    assert post(client, event).get_json() == {"status": "ignored"}
    payload = stored_payloads(app)[event["id"]]
    assert leaks(payload) == []
    assert json.loads(payload) == {
        "id": event["id"], "object": "event", "type": "charge.succeeded", "created": event["created"],
        "livemode": False, "api_version": "2026-10-28.endive", "data": {"object": {"id": "ch_pii", "object": "charge"}},
    }
    with app.app_context():
        row = db.session.scalar(db.select(WebhookEvent))
        assert (row.object_id, row.api_version, row.status) == ("ch_pii", "2026-10-28.endive", "ignored")


def test_handled_events_are_stored_without_contact_or_payment_details(app, client):
    sent = events()
    for event in sent:
        assert post(client, event).status_code == 200
    stored = stored_payloads(app)
    assert set(stored) == {event["id"] for event in sent}
    for event in sent:
        assert leaks(stored[event["id"]]) == [], event["type"]
    # What the handlers read is all there.
    intent = json.loads(stored[sent[2]["id"]])["data"]["object"]
    assert (intent["id"], intent["amount_received"], intent["currency"], intent["customer"]) == (
        "pi_ok", 2900, "usd", "cus_pii")
    assert intent["charges"]["data"][0]["id"] == "ch_ok"
    failed = json.loads(stored[sent[4]["id"]])["data"]["object"]["last_payment_error"]
    assert failed["decline_code"] == "insufficient_funds" and failed["payment_method"] == {
        "id": "pm_pii", "object": "payment_method"}
    kept = json.loads(stored[sent[0]["id"]])["data"]["object"]
    assert (kept["email"], kept["name"], kept["metadata"]) == ("kept@example.com", "Ada", {"kamiyo_user_id": "user-pii"})


def test_an_event_with_nothing_to_strip_is_stored_as_received(app, client):
    event = make_event("customer.created", customer("cus_plain", user_id="user-plain"))
    assert post(client, event).get_json() == {"status": "processed"}
    assert stored_payloads(app)[event["id"]] == json.dumps(event)


def rows(app) -> dict[str, list]:
    """The state the handlers leave, without row ids."""
    with app.app_context():
        found = {
            "customers": [tuple(r) for r in db.session.execute(db.select(
                Customer.user_id, Customer.email, Customer.name, Customer.stripe_customer_id, Customer.last_event_id,
            ).order_by(Customer.user_id))],
            "subscriptions": [tuple(r) for r in db.session.execute(db.select(
                Subscription.stripe_subscription_id, Subscription.status, Subscription.price_id, Subscription.tier,
                Subscription.current_period_end, Subscription.last_event_id, Subscription.duplicate_of,
            ).order_by(Subscription.stripe_subscription_id))],
            "payments": [tuple(r) for r in db.session.execute(db.select(
                PaymentOutcome.stripe_object_id, PaymentOutcome.stripe_customer_id, PaymentOutcome.amount,
                PaymentOutcome.currency, PaymentOutcome.outcome, PaymentOutcome.failure_code,
                PaymentOutcome.occurred_at, PaymentOutcome.last_event_id,
            ).order_by(PaymentOutcome.stripe_object_id))],
        }
        db.session.rollback()
    return found


def wipe(app) -> None:
    with app.app_context():
        for model in (PaymentOutcome, Subscription, DeletedStripeCustomer, Customer):
            db.session.execute(db.delete(model))
        db.session.commit()


def test_a_replay_of_the_stored_payloads_gives_the_rows_the_whole_events_gave(app, client, runner):
    sent = events()
    # The whole events, as handled before anything was stripped.
    with app.app_context():
        for event in sent:
            handlers.dispatch(json.loads(json.dumps(event)))
            db.session.commit()
    whole = rows(app)
    assert [len(whole[name]) for name in ("customers", "subscriptions", "payments")] == [1, 1, 3]
    wipe(app)

    for event in sent:
        assert post(client, event).get_json() == {"status": "processed"}
    assert rows(app) == whole

    wipe(app)
    for event in sent:
        result = runner.invoke(args=["webhooks", "replay", event["id"]])
        assert result.exit_code == 0 and f"{event['id']}: processed (attempt 2)" in result.output, result.output
    assert rows(app) == whole

    # The dashboard's replay button, on a stripped failed event.
    last = sent[4]
    with app.app_context():
        db.session.execute(db.update(WebhookEvent).where(WebhookEvent.event_id == last["id"]).values(status="failed"))
        db.session.execute(db.delete(PaymentOutcome).where(PaymentOutcome.stripe_object_id == "pi_failed"))
        db.session.commit()
    make_user(app, "admin@example.com", "admin")
    login(client, "admin@example.com")
    page = client.get(f"/dashboard/confirm/replay-webhook?target={last['id']}")
    answer = client.post("/dashboard/actions/replay-webhook",
                         data={"target": last["id"], "csrf_token": csrf_token(page.get_data(as_text=True))})
    assert answer.status_code == 302
    assert rows(app) == whole


@pytest.mark.parametrize("event_type", ["charge.succeeded", "payment_intent.succeeded"])
def test_the_event_page_shows_a_stripped_payload(app, client, event_type):
    obj = charge("ch_page", "pi_page") if event_type == "charge.succeeded" else events()[2]["data"]["object"]
    event = make_event(event_type, obj)
    assert post(client, event).status_code == 200
    make_user(app, "viewer@example.com")
    login(client, "viewer@example.com")
    page = client.get(f"/dashboard/webhooks/{event['id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert event["id"] in html and obj["id"] in html and event_type in html
    assert leaks(html) == []


# --- payment operations: what was sent to Stripe is cleared once nothing can replay it ----------------


def operations(app) -> dict[str, tuple]:
    from kamiyo.payments.models import PaymentOperation

    with app.app_context():
        found = {op.scope: (op.status, op.params_json, op.updated_at)
                 for op in db.session.scalars(db.select(PaymentOperation))}
        db.session.rollback()
    return found


def test_finished_operations_lose_their_parameters_and_answer_a_repeat_as_before(api, payments_app, plan_id):
    import datetime as dt
    import uuid

    from kamiyo import scheduler
    from kamiyo.models import utcnow
    from kamiyo.payments.models import PaymentOperation

    user = f"min-{uuid.uuid4().hex[:10]}"
    body = {"user_id": user, "email": "min@example.com", "name": "Min Imal"}
    created = api.post("/customers", json=body)
    assert created.status_code == 201, created.get_json()
    customer_id = created.get_json()["id"]
    sub_body = {"customer_id": customer_id, "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"}
    sub = api.post("/subscriptions", json=sub_body)
    assert sub.status_code == 201, sub.get_json()

    # In flight (its lease ran out: the next request resumes it with these parameters) and
    # failed (a new request or reconcile takes it over with parameters of its own), both long ago.
    long_ago = utcnow() - dt.timedelta(days=3)
    with payments_app.app_context():
        for status, lease in (("pending", long_ago), ("failed", None)):
            db.session.add(PaymentOperation(
                operation="customer.create", scope=f"customer.create:{status}-{user}", user_id=f"{status}-{user}",
                params_json=json.dumps({"email": f"{status}@example.com"}), status=status, lease_expires_at=lease,
                recovery_point="created" if status == "pending" else "claimed", owner_token="t" * 32,
                created_at=long_ago, updated_at=long_ago))
        db.session.commit()

    assert scheduler.run_once(payments_app, "payments-purge", "params-within-window")
    before = operations(payments_app)
    # The succeeded ones are within the window; the failed one is past it.
    assert sorted(status for status, params, _ in before.values() if params == "{}") == ["failed"]

    with payments_app.app_context():
        db.session.execute(
            db.update(PaymentOperation).where(PaymentOperation.status == "succeeded")
            .values(updated_at=utcnow() - dt.timedelta(hours=25)))
        db.session.commit()
    aged = operations(payments_app)
    assert scheduler.run_once(payments_app, "payments-purge", "params-past-window")
    after = operations(payments_app)
    for scope, (status, params, updated_at) in after.items():
        if status in ("succeeded", "failed"):
            assert params == "{}", scope
            assert updated_at == aged[scope][2]  # the dashboard counts finished operations by it
        else:
            assert (status, params, updated_at) == aged[scope], scope
    assert sorted(status for status, _, _ in after.values()) == ["failed", "pending", "succeeded", "succeeded"]

    # A repeated create answers as before: the same customer and subscription, or 409 on other details.
    again = api.post("/customers", json=body)
    assert again.status_code == 200 and again.get_json()["id"] == customer_id
    other = api.post("/customers", json={**body, "email": "someone.else@example.com"})
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "customer_exists_with_different_details"
    repeated = api.post("/subscriptions", json=sub_body)
    assert repeated.status_code == 200 and repeated.get_json()["id"] == sub.get_json()["id"]
    # Its result gone (cancelled), the operation is taken over with the new request's parameters.
    assert api.post(f"/subscriptions/{sub.get_json()['id']}/cancel").status_code == 200
    renewed = api.post("/subscriptions", json=sub_body)
    assert renewed.status_code == 201 and renewed.get_json()["id"] != sub.get_json()["id"]
    params = json.loads(operations(payments_app)[f"subscription.create:{customer_id}:{plan_id}"][1])
    assert params["items"] == [{"price": plan_id}] and params["payment_method"] == "pm_card_visa"


# --- the purges run even without a scheduler ------------------------------------------------------

FALLBACK_JOBS = {"webhook-purge", "payments-purge", "job-runs-prune"}


def seed_expired(app) -> None:
    import datetime as dt

    from kamiyo.models import utcnow
    from kamiyo.stripe_gateway.models import StripeCall

    old = utcnow() - dt.timedelta(days=40)
    with app.app_context():
        db.session.add(WebhookEvent(event_id="evt_expired", type="charge.succeeded", status="ignored", attempts=1,
                                    created=old, received_at=old, payload="{}"))
        db.session.add(StripeCall(operation="customer.create", attempt=1, outcome="success", created_at=old))
        db.session.commit()


def expired_left(app) -> int:
    from kamiyo.stripe_gateway.models import StripeCall

    with app.app_context():
        left = sum(db.session.scalar(db.select(db.func.count()).select_from(model)) or 0
                   for model in (WebhookEvent, StripeCall))
        db.session.rollback()
    return left


def job_runs(app) -> list[tuple[str, str, str]]:
    from kamiyo.scheduler import JobRun

    with app.app_context():
        found = [tuple(r) for r in db.session.execute(db.select(JobRun.job, JobRun.period, JobRun.status))]
        db.session.rollback()
    return sorted(found)


def fallback_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and "the scheduler isn't running the purges" in r.getMessage()]


def test_without_a_scheduler_a_web_request_has_the_purges_run_and_warns(make_app, caplog):
    import dataclasses
    import threading
    import time

    from kamiyo.scheduler import JOBS_KEY
    from tests.support import wait_until

    app = make_app()
    state = app.extensions["scheduler_fallback_state"]
    # The first look only after SCHEDULER_FALLBACK_MINUTES: a scheduler started beside it shows up first.
    assert state.next_check - time.monotonic() > 9 * 60
    seed_expired(app)
    # The webhook purge is held until the request has answered: it runs apart from the request.
    started, release = threading.Event(), threading.Event()
    spec = app.extensions[JOBS_KEY]["webhook-purge"]

    def held():
        started.set()
        assert release.wait(10)
        return spec.func()

    app.extensions[JOBS_KEY]["webhook-purge"] = dataclasses.replace(spec, func=held)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert expired_left(app) == 2 and job_runs(app) == []
    state.next_check = time.monotonic()  # the interval is over
    assert client.get("/health").status_code == 200  # answered while the purge is held
    assert started.wait(10)
    release.set()
    wait_until(lambda: not state.running)  # the check is over
    assert {job for job, _, status in job_runs(app) if status == "ok"} == FALLBACK_JOBS
    assert expired_left(app) == 0
    assert sorted(w.split()[1] for w in fallback_warnings(caplog)) == sorted(FALLBACK_JOBS)
    assert state.next_check - time.monotonic() > 9 * 60  # the next look in an interval


def test_several_workers_and_hosts_run_each_purge_once(make_app, caplog):
    from concurrent.futures import ThreadPoolExecutor

    from kamiyo.scheduler.fallback import run_overdue

    workers = [make_app() for _ in range(3)]  # each its own app, engine and pool: workers, or hosts
    seed_expired(workers[0])
    with ThreadPoolExecutor(len(workers)) as pool:
        ran = [name for names in pool.map(run_overdue, workers) for name in names]
    assert sorted(ran) == sorted(FALLBACK_JOBS)
    assert [(job, status) for job, _, status in job_runs(workers[0])] == sorted((j, "ok") for j in FALLBACK_JOBS)
    assert len(fallback_warnings(caplog)) == len(FALLBACK_JOBS)
    assert expired_left(workers[0]) == 0


def test_nothing_runs_while_a_scheduler_runs_the_purges(app, caplog):
    import datetime as dt

    from kamiyo.models import utcnow
    from kamiyo.scheduler import JobRun
    from kamiyo.scheduler.fallback import run_overdue

    seed_expired(app)
    with app.app_context():
        # A new installation whose scheduler started an hour ago: its purges are not due yet.
        db.session.add(JobRun(job="alert-evaluation", period="first", status="ok", host="h", pid=1,
                              started_at=utcnow() - dt.timedelta(hours=1)))
        db.session.commit()
    assert run_overdue(app) == []
    with app.app_context():
        db.session.execute(db.update(JobRun).values(started_at=utcnow() - dt.timedelta(days=3)))
        # The scheduler ran two of them within the day; the third is overdue.
        for name in ("webhook-purge", "payments-purge"):
            db.session.add(JobRun(job=name, period="yesterday", status="ok", host="h", pid=1,
                                  started_at=utcnow() - dt.timedelta(hours=20)))
        db.session.add(JobRun(job="job-runs-prune", period="failed", status="failed", host="h", pid=1,
                              started_at=utcnow() - dt.timedelta(hours=2)))
        db.session.commit()
    assert run_overdue(app) == ["job-runs-prune"]
    assert expired_left(app) == 2
    # The scheduler ran it and it failed there: said so, not blamed on a missing scheduler.
    assert fallback_warnings(caplog) == []
    [warned] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "job-runs-prune" in r.getMessage()]
    assert "job-runs-prune failed in the scheduler at " in warned and warned.endswith("ran it again: ok"), warned


@pytest.mark.slow
def test_two_gunicorn_workers_run_each_purge_once(database_uri, tmp_path):
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests
    from sqlalchemy import create_engine, text

    from tests.support import gunicorn, logged, wait_until

    instance = tmp_path / "gunicorn-instance"
    instance.mkdir()
    with gunicorn(instance, database_uri, SCHEDULER_FALLBACK_MINUTES="0.02") as url:  # 1.2 s
        time.sleep(1.5)

        def health(_):
            return requests.get(url + "/health", headers={"Connection": "close"}, timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:  # new connections: both workers take their share
            assert set(pool.map(health, range(16))) == {200}
        engine = create_engine(database_uri)
        try:
            def runs():
                with engine.connect() as connection:
                    return sorted(connection.execute(text("SELECT job, status FROM job_runs")).all())

            wait_until(lambda: [status for _, status in runs()] == ["ok"] * len(FALLBACK_JOBS), timeout=30)
            time.sleep(1.5)
            with ThreadPoolExecutor(8) as pool:  # the next looks find them done
                assert set(pool.map(health, range(16))) == {200}
            time.sleep(0.5)
            assert runs() == sorted((job, "ok") for job in FALLBACK_JOBS)
        finally:
            engine.dispose()
    warned = [line["message"].split()[1] for line in logged(instance)
              if "the scheduler isn't running the purges" in line.get("message", "")]
    assert sorted(warned) == sorted(FALLBACK_JOBS)
