"""The dashboard in a real browser: traffic through the API and signed webhooks, then every page,
whose numbers must equal what the database holds; a replay and a revocation with their buttons;
the audit log; accessibility (axe) and the keyboard; a screenshot of every page."""

from __future__ import annotations

import json
import re

import pytest
import requests
from sqlalchemy import func, select, text

from kamiyo.extensions import db
from kamiyo.models import Customer, utcnow
from kamiyo.webhooks.models import WebhookEvent
from devtools.stripe_proxy import Fault
from tests.browser.support import check_accessibility, screenshot, tab_to
from tests.support import DASHBOARD_PASSWORD, make_key, make_user, wait_until
from tests.webhooks.stripe_signing import make_event, signed

ADMIN = "ops-admin@example.com"
YEAR_10000 = 253402300800  # a period end no datetime can hold: the handler fails on it
PAGES = {
    "overview": "/dashboard/",
    "version": "/dashboard/version",
    "stripe-calls": "/dashboard/stripe-calls",
    "rate-limits": "/dashboard/rate-limits",
    "webhooks": "/dashboard/webhooks",
    "payments": "/dashboard/payments",
    "breaker": "/dashboard/breaker",
    "jobs": "/dashboard/jobs",
    "api-keys": "/dashboard/api-keys",
    "audit": "/dashboard/audit",
    "api": "/dashboard/api",
}


@pytest.fixture(scope="module")
def live_app_config(live_app_config, stripe_proxy):
    # Stripe is the real emulator behind its proxy (which can queue faults); a small webhook
    # limit, so that a burst is a few requests.
    return {**live_app_config, "STRIPE_API_BASE": stripe_proxy.url, "WEBHOOK_RATE_LIMIT": "3/minute",
            "STRIPE_RETRY_MIN_WAIT": 0.0, "STRIPE_RETRY_MAX_WAIT": 0.0}


@pytest.fixture(scope="module")
def traffic(live_server, plan_id, stripe_proxy):
    """Customers and a subscription through the JSON API, signed webhooks (processed, ignored, a
    duplicate, one whose handler fails), an event that failed during an outage, and a burst of
    unsigned requests that the rate limit blocks."""
    app, url = live_server.app, live_server.url
    make_user(app, ADMIN, "admin")
    key = make_key(app)
    api = requests.Session()
    api.headers.update(key)
    stripe_proxy.clear()
    stripe_proxy.add_faults(Fault("status", 503, path=r"^/v1/customers$"))  # the first create is retried
    for n in range(3):
        made = api.post(f"{url}/api/v1/payments/customers",
                        json={"user_id": f"browser-{n}", "email": f"b{n}@example.com"})
        assert made.status_code == 201, made.text
    again = api.post(f"{url}/api/v1/payments/customers", json={"user_id": "browser-0", "email": "b0@example.com"})
    assert again.status_code == 200  # a dedup hit
    subscription = api.post(f"{url}/api/v1/payments/subscriptions", json={
        "customer_id": 1, "price_id": plan_id, "tier": "pro", "payment_method": "pm_card_visa"})
    assert subscription.status_code == 201, subscription.text
    sub = subscription.json()

    def deliver(event):
        body, headers = signed(event)
        return requests.post(f"{url}/api/v1/webhooks/stripe", data=body, headers=headers)

    with app.app_context():
        customer = db.session.get(Customer, 1)
        stripe_customer = customer.stripe_customer_id
    updated = make_event("customer.updated", {"id": stripe_customer, "object": "customer",
                                              "email": "b0@example.com", "metadata": {"kamiyo_user_id": "browser-0"}})
    assert deliver(updated).json() == {"status": "processed"}
    assert deliver(updated).json() == {"status": "duplicate"}
    assert deliver(make_event("charge.dispute.funds_reinstated", {"id": "du_1", "object": "dispute"})).status_code == 200
    broken = make_event("customer.subscription.updated", {
        "id": sub["stripe_subscription_id"], "object": "subscription", "customer": stripe_customer, "status": "active",
        "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": plan_id},
                                               "current_period_end": YEAR_10000}]}})
    assert deliver(broken).status_code == 500
    # An event that failed while the database was away: its replay succeeds.
    outage = make_event("customer.updated", {"id": stripe_customer, "object": "customer", "email": "b0@example.com",
                                             "name": "Ada after the outage",
                                             "metadata": {"kamiyo_user_id": "browser-0"}})
    with app.app_context():
        db.session.add(WebhookEvent(event_id=outage["id"], type=outage["type"], created=utcnow(), status="failed",
                                    attempts=1, last_error="OperationalError: database is locked",
                                    payload=json.dumps(outage), object_id=stripe_customer))
        db.session.commit()
    blocked = [requests.post(f"{url}/api/v1/webhooks/stripe", data=b"{}", headers={"User-Agent": "burst/1"})
               for _ in range(6)]
    assert [answer.status_code for answer in blocked].count(429) == 3
    # Blocks are counted in memory and written within a second of the last one.
    wait_until(lambda: _scalar(app, "SELECT coalesce(sum(count), 0) FROM rate_limit_violations") == 3)
    return {"key": key, "broken": broken["id"], "outage": outage["id"]}


def _scalar(app, sql: str) -> int:
    with app.app_context():
        return int(db.session.scalar(text(sql)))


def _number(page, element_id: str) -> int:
    return int(page.locator(f"#{element_id}").inner_text())


def _sign_in_from_the_keyboard(page) -> None:
    page.goto("/dashboard/webhooks")
    assert page.url.endswith("/login?next=/dashboard/webhooks")
    tab_to(page, "#email")
    page.keyboard.type(ADMIN)
    tab_to(page, "#password")
    page.keyboard.type(DASHBOARD_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^http://[^/]+/dashboard/webhooks$"))


def test_every_page_shows_what_the_database_holds(page, live_server, traffic):
    app = live_server.app
    _sign_in_from_the_keyboard(page)
    for name, path in PAGES.items():
        page.goto(path)
        assert page.locator("h1").count() == 1, name
        check_accessibility(page)
        screenshot(page, f"dashboard-{name}")

    page.goto("/dashboard/stripe-calls")
    assert _number(page, "attempts-total") == _scalar(app, "SELECT count(*) FROM stripe_calls")
    assert _number(page, "errors-total") == _scalar(app, "SELECT count(*) FROM stripe_calls WHERE outcome = 'error'")
    assert _number(page, "retries-total") == _scalar(app, "SELECT count(*) FROM stripe_calls WHERE attempt > 1")
    assert _number(page, "retries-total") == 1 and _number(page, "errors-total") == 1  # the 503, retried

    page.goto("/dashboard/webhooks")
    for status in ("processed", "ignored", "failed"):
        held = _scalar(app, f"SELECT count(*) FROM webhook_events WHERE status = '{status}'")
        assert _number(page, f"events-{status}") == held, status
    assert _number(page, "events-failed") == 2

    page.goto("/dashboard/rate-limits")
    assert _number(page, "violations-total") == _scalar(app, "SELECT sum(count) FROM rate_limit_violations") == 3

    page.goto("/dashboard/payments")
    for status, element in (("pending", "ops-pending"), ("failed", "ops-failed"), ("succeeded", "ops-succeeded")):
        held = _scalar(app, f"SELECT count(*) FROM payment_operations WHERE status = '{status}'")
        assert _number(page, element) == held, status
    assert _number(page, "ops-succeeded") == 4 and _number(page, "dedup-hits") >= 1

    page.goto("/dashboard/")
    calls = page.locator(".card", has_text="Stripe error rate").inner_text()
    attempts = _scalar(app, "SELECT count(*) FROM stripe_calls")
    assert f"in {attempts} attempts" in calls
    assert page.locator(".card", has_text="Failed webhooks").locator(".card-value").inner_text() == "2"
    assert page.locator(".card", has_text="Rate-limit violations").locator(".card-value").inner_text() == "3"
    summary = requests.get(f"{live_server.url}/api/v1/ops/summary", headers=traffic["key"]).json()
    assert summary["stripe_calls_24h"]["attempts"] == attempts
    assert summary["webhooks"]["failed"] == 2


def test_replay_and_revoke_with_their_buttons_then_the_audit_log(page, live_server, traffic):
    app = live_server.app
    _sign_in_from_the_keyboard(page)

    page.goto("/dashboard/webhooks?status=failed")
    page.get_by_role("link", name=traffic["outage"]).click()
    page.get_by_role("link", name="Replay this event").click()
    check_accessibility(page)
    screenshot(page, "dashboard-confirm-replay")
    page.get_by_role("button", name=re.compile("^Yes, replay")).click()
    assert "processed (attempt 2)" in page.locator(".flash").inner_text()
    check_accessibility(page)
    screenshot(page, "dashboard-webhook-event")
    with app.app_context():
        row = db.session.scalar(select(WebhookEvent).filter_by(event_id=traffic["outage"]))
        assert (row.status, row.attempts) == ("processed", 2)

    # The revocation, from the keyboard only.
    page.goto("/dashboard/api-keys")
    tab_to(page, page.get_by_role("link", name="Revoke"))
    page.keyboard.press("Enter")
    page.wait_for_url("**/confirm/revoke-api-key?target=*")
    tab_to(page, page.get_by_role("button", name=re.compile("^Yes, revoke")))
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"^http://[^/]+/dashboard/api-keys$"))
    assert "revoked tests" in page.locator(".flash").inner_text()
    assert requests.get(f"{live_server.url}/api/v1/ops/summary", headers=traffic["key"]).status_code == 401
    with app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")) == 1

    page.goto("/dashboard/audit")
    check_accessibility(page)
    screenshot(page, "dashboard-audit-after-actions")
    rows = page.locator("tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert re.match(rf"^\S+ \S+\t{re.escape(ADMIN)}\trevoke-api-key\t\d+\tok\t127\.0\.0\.1\trevoked tests", rows[0])
    assert re.match(rf"^\S+ \S+\t{re.escape(ADMIN)}\treplay-webhook\t{traffic['outage']}\tok\t127\.0\.0\.1\tprocessed", rows[1])
    with app.app_context():
        held = db.session.scalar(select(func.count()).select_from(text("audit_events")))
    assert held == 2


def test_the_charts_ranges_and_filters_work_without_javascript(browser, live_server, traffic):
    from tests.browser.support import new_guarded_context

    guard = new_guarded_context(browser, base_url=live_server.url, java_script_enabled=False)
    page = guard.context.new_page()
    page.goto("/login")
    page.fill("#email", ADMIN)
    page.fill("#password", DASHBOARD_PASSWORD)
    page.click("button[type=submit]")
    page.goto("/dashboard/stripe-calls")
    page.get_by_role("link", name="7d").click()
    assert "range=7d" in page.url and page.locator("svg.chart").count() == 1
    page.select_option("select[name=outcome]", "success")
    page.click("form.filters button")
    assert "outcome=success" in page.url and "range=7d" in page.url
    page.locator("table.calls tbody .badge").first.wait_for()
    outcomes = set(page.locator("table.calls tbody .badge").all_inner_texts())
    assert outcomes == {"success"}
    guard.check()
    guard.context.close()


_MARK_INTERACTIVE = """() => {
  const all = [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, [tabindex]:not([tabindex="-1"])')]
    .filter(el => el.offsetParent !== null || el === document.activeElement);
  all.forEach((el, i) => el.dataset.k = String(i));
  return all.map(el => el.tagName.toLowerCase() + ' ' + (el.textContent || el.name || '').trim().slice(0, 40));
}"""


def test_every_control_on_every_page_is_reached_from_the_keyboard(page, live_server, traffic):
    """Tab alone reaches every link, button and field of each page (with a visible focus)."""
    _sign_in_from_the_keyboard(page)
    for name, path in {**PAGES, "event": f"/dashboard/webhooks/{traffic['broken']}"}.items():
        page.goto(path)
        controls = page.evaluate(_MARK_INTERACTIVE)
        reached: set[str] = set()
        for _ in range(len(controls) + 5):
            page.keyboard.press("Tab")
            focused = page.evaluate("() => document.activeElement && document.activeElement.dataset.k")
            if focused is not None:
                reached.add(focused)
                outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
                assert outline != "none", (name, controls[int(focused)])
        missed = [controls[i] for i in range(len(controls)) if str(i) not in reached]
        assert not missed, (name, missed)
