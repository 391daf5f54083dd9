"""`flask --app wsgi report --since 1h|1d|7d` on a seeded database: the numbers, their lines
against the checklist's targets, and the exit code."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import time_machine

from kamiyo.extensions import db
from kamiyo.models import Customer, Subscription, utcnow
from kamiyo.release.report import violations_allowed
from kamiyo.scheduler.models import JobRun
from kamiyo.stripe_gateway.models import StripeCall
from kamiyo.webhooks.models import PaymentOutcome, RateLimitViolation

pytestmark = pytest.mark.both_databases


def seed(app, now: dt.datetime) -> None:
    """Three moments: 10 minutes ago (in every window), 3 hours ago (1d, 7d), 3 days ago (7d)."""
    recent, hours, days = now - dt.timedelta(minutes=10), now - dt.timedelta(hours=3), now - dt.timedelta(days=3)
    rows: list = []
    n = iter(range(10_000))

    def outcomes(count: int, outcome: str, at: dt.datetime) -> None:
        rows.extend(PaymentOutcome(stripe_object_id=f"pi_{next(n)}", outcome=outcome, occurred_at=at)
                    for _ in range(count))

    def calls(count: int, outcome: str, attempt: int, at: dt.datetime) -> None:
        rows.extend(StripeCall(operation="customer.create", attempt=attempt, outcome=outcome, created_at=at,
                               duration_ms=1.0) for _ in range(count))

    outcomes(99, "succeeded", recent)
    outcomes(1, "failed", recent)
    calls(95, "success", 1, recent)
    calls(3, "success", 2, recent)  # retries
    calls(2, "error", 1, recent)
    rows.append(RateLimitViolation(client_ip="203.0.113.9", endpoint="/api/v1/webhooks/stripe", limit="30/minute",
                                   occurred_at=recent, count=1))

    outcomes(100, "succeeded", hours)
    calls(200, "success", 1, hours)
    rows.append(RateLimitViolation(client_ip="203.0.113.9", endpoint="/api/v1/webhooks/stripe", limit="30/minute",
                                   occurred_at=hours, count=3))

    outcomes(2, "failed", days)
    calls(50, "error", 2, days)
    rows.append(RateLimitViolation(client_ip="198.51.100.7", endpoint="/api/v1/webhooks/stripe", limit="30/minute",
                                   occurred_at=days, count=40))

    rows.append(Customer(user_id="linked", email="a@example.com", stripe_customer_id="cus_linked"))
    rows.append(Customer(user_id="unlinked", email="b@example.com", stripe_customer_id=None))
    for age, status in ((9, "ok"), (2, "ok")):  # in the order they ran
        started = now - dt.timedelta(days=age)
        rows.append(JobRun(job="stripe-version-check", period=f"w{age}", started_at=started,
                           finished_at=started + dt.timedelta(seconds=3), status=status, host="web-1", pid=1))
    with app.app_context():
        db.session.add_all(rows)
        db.session.commit()


def report(app, since: str, *more: str):
    return app.test_cli_runner().invoke(args=["report", "--since", since, *more])


# Mid-minute and mid-day: the runs 2 and 9 days back print as the minutes written below.
NOW = dt.datetime(2026, 12, 10, 12, 0, 20, tzinfo=dt.UTC)


@time_machine.travel(NOW, tick=True)
def test_the_first_hour_day_and_week_in_numbers(app):
    now = utcnow()
    assert now - NOW < dt.timedelta(seconds=20)
    seed(app, now)
    version_line = "[ok  ] weekly version check: last runs: ok 2026-12-08 12:00, ok 2026-12-01 12:00"
    dedup = ("[ok  ] dedup hits: not readable from this process (a counter of the service's: set "
             "PROMETHEUS_MULTIPROC_DIR as the service has it, or read stripe_idempotency_dedup_total on /metrics)")
    unlinked = "[ok  ] customers without a Stripe link: 1 (deleted on Stripe, or their creation still under way)"

    hour = report(app, "1h")
    assert hour.exit_code == 2, hour.output
    assert hour.output.splitlines() == [
        "[FAIL] payment success rate: 99.00% (99 of 100 payments succeeded; target > 99%) -> look at the failures: "
        "flask --app wsgi webhooks list --type payment_intent.payment_failed",
        "[FAIL] error rate: 2.00% (2 of 100 Stripe attempts failed; target < 1%) -> see which: "
        "/dashboard/stripe-calls?outcome=error (or the ops API)",
        "[ok  ] retry rate: 3.00% (3 of 100 attempts were retries; expected 1-5%)",
        dedup,
        "[ok  ] rate-limit violations: 1 blocked request(s) (expected at most 1 in 1h: 0-5 a day)",
        "[ok  ] duplicate subscriptions: none flagged",
        unlinked,
        version_line,
        "report: 6 ok, 0 warning(s), 2 failure(s) (exit 2)",
    ]

    day = report(app, "1d")
    assert day.exit_code == 0, day.output
    assert day.output.splitlines()[:3] + day.output.splitlines()[4:5] == [
        "[ok  ] payment success rate: 99.50% (199 of 200 payments succeeded; target > 99%)",
        "[ok  ] error rate: 0.67% (2 of 300 Stripe attempts failed; target < 1%)",
        "[ok  ] retry rate: 1.00% (3 of 300 attempts were retries; expected 1-5%)",
        "[ok  ] rate-limit violations: 4 blocked request(s) (expected at most 5 in 1d: 0-5 a day)",
    ]

    week = report(app, "7d", "--json")
    assert week.exit_code == 2, week.output
    body = json.loads(week.output)
    lines = {c["name"]: (c["status"], c["line"]) for c in body["checks"]}
    assert lines["payment success rate"] == ("fail", "98.51% (199 of 202 payments succeeded; target > 99%)")
    assert lines["error rate"] == ("fail", "14.86% (52 of 350 Stripe attempts failed; target < 1%)")
    assert lines["retry rate"] == ("fail", "15.14% (53 of 350 attempts were retries; expected 1-5%)")
    assert lines["rate-limit violations"] == (
        "fail", "44 blocked request(s) (expected at most 35 in 7d: 0-5 a day)")
    assert lines["weekly version check"][0] == "ok"
    numbers = body["numbers"]
    assert numbers["payments"] == {"succeeded": 199, "failed": 3, "success_rate": 0.9851}
    assert numbers["stripe_calls"] == {"attempts": 350, "errors": 52, "retries": 53, "error_rate": 0.1486,
                                       "retry_rate": 0.1514}
    assert (numbers["customers_without_stripe_link"], numbers["duplicate_subscriptions"]) == (1, 0)


def test_no_traffic_is_said_and_a_version_check_that_never_ran_is_a_warning(app):
    result = report(app, "1h")
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[:3] == [
        "[ok  ] payment success rate: no traffic (no payment outcome in the window)",
        "[ok  ] error rate: no traffic (no Stripe call in the window)",
        "[ok  ] retry rate: no traffic (no Stripe call in the window)",
    ]
    assert "[WARN] weekly version check: has never run -> is the scheduler running" in result.output


def test_a_flagged_duplicate_subscription_misses_the_target(app):
    with app.app_context():
        customer = Customer(user_id="u1", email="u1@example.com", stripe_customer_id="cus_1")
        db.session.add(customer)
        db.session.flush()
        first = Subscription(customer_id=customer.id, price_id="price_a", tier="pro", status="active",
                             stripe_subscription_id="sub_1")
        db.session.add(first)
        db.session.flush()
        db.session.add(Subscription(customer_id=customer.id, price_id="price_a", tier="pro", status="active",
                                    stripe_subscription_id="sub_2", duplicate_of=first.id))
        db.session.commit()
    result = report(app, "1d")
    assert result.exit_code == 2, result.output
    assert ("[FAIL] duplicate subscriptions: 1 flagged (target 0) -> flask --app wsgi payments reconcile "
            "--subscriptions prints each with the command that cancels it") in result.output.splitlines()


def test_the_violations_allowed_scale_with_the_window():
    assert [violations_allowed(dt.timedelta(hours=h)) for h in (1, 24, 168)] == [1, 5, 35]
