"""Per-minute counts: a chart or a count reads the same whether the rollup job ran or not."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from kamiyo import rollups
from kamiyo.extensions import db
from kamiyo.listing import time_range
from kamiyo.stripe_gateway import queries as stripe_calls
from kamiyo.stripe_gateway.models import StripeCall
from kamiyo.webhooks import queries as webhooks
from kamiyo.webhooks.models import RateLimitViolation
from tests.support import both_databases

pytestmark = both_databases
NOW = dt.datetime(2026, 12, 6, 12, 0, 30, tzinfo=dt.UTC)


def _call(at: dt.datetime, outcome: str = "success", attempt: int = 1) -> StripeCall:
    return StripeCall(operation="customer.create", attempt=attempt, outcome=outcome, created_at=at)


@pytest.fixture
def calls(app):
    with app.app_context():
        db.session.add_all(
            [
                _call(NOW - dt.timedelta(minutes=1)),  # in the tail (inside the grace)
                _call(NOW - dt.timedelta(minutes=30), "error"),
                _call(NOW - dt.timedelta(minutes=30), "success", attempt=2),
                _call(dt.datetime(2026, 12, 6, 11, 0, 0, tzinfo=dt.UTC)),  # exactly on a bucket edge
                _call(dt.datetime(2026, 12, 6, 10, 59, 59, 999999, tzinfo=dt.UTC)),
                _call(NOW - dt.timedelta(hours=30)),  # outside 24 h, inside 7 d
                _call(NOW - dt.timedelta(days=9)),  # older than every view
            ]
        )
        db.session.commit()


def _views(app):
    with app.app_context(), time_machine.travel(NOW, tick=False):
        return {
            name: (stripe_calls.summary(time_range(name)), stripe_calls.attempt_series(time_range(name)))
            for name in ("1h", "24h", "7d")
        }


def test_counts_are_the_same_before_and_after_the_rollup(app, calls):
    before = _views(app)
    with app.app_context(), time_machine.travel(NOW, tick=False):
        assert rollups.roll_up()["stripe_calls"] == 31 * 24 * 60 - 2
    assert _views(app) == before
    assert before["24h"][0] == {"attempts": 5, "errors": 1, "retries": 1, "error_rate": 0.2, "retry_rate": 0.2}
    assert before["7d"][0]["attempts"] == 6
    assert before["1h"][0]["attempts"] == 3  # the edge row at 11:00:00 is in; 10:59:59.999999 is not


def test_a_bucket_edge_row_lands_in_the_later_bucket(app, calls):
    with app.app_context(), time_machine.travel(NOW, tick=False):
        rollups.roll_up()
        window = time_range("1h")
        series = stripe_calls.attempt_series(window)
    assert window.start == dt.datetime(2026, 12, 6, 11, 1, tzinfo=dt.UTC)  # the end is rounded up to 12:01
    assert sum(series["first attempts"]) == 2 and series["retries"][29] == 1


def test_a_row_committed_late_within_the_grace_is_still_counted(app, calls):
    with app.app_context(), time_machine.travel(NOW, tick=False):
        rollups.roll_up()
        late = _call(NOW - rollups.GRACE - dt.timedelta(minutes=1))  # before the mark: too late
        on_time = _call(NOW - rollups.GRACE + dt.timedelta(seconds=30))  # after the mark: in the tail
        db.session.add_all([late, on_time])
        db.session.commit()
        assert stripe_calls.summary(time_range("24h"))["attempts"] == 6


def test_a_second_rollup_counts_nothing_twice(app, calls):
    with app.app_context():
        with time_machine.travel(NOW, tick=False):
            rollups.roll_up()
            assert rollups.roll_up()["stripe_calls"] == 0
        with time_machine.travel(NOW + dt.timedelta(minutes=7), tick=False):
            assert rollups.roll_up()["stripe_calls"] == 7
            assert stripe_calls.summary(time_range("24h"))["attempts"] == 5


def test_violations_and_events_read_through_their_rollups(app):
    with app.app_context(), time_machine.travel(NOW, tick=False):
        db.session.add_all(
            RateLimitViolation(client_ip="203.0.113.1", endpoint="/x", limit="1/minute",
                               occurred_at=NOW - dt.timedelta(minutes=m))
            for m in (1, 20, 200)
        )
        db.session.commit()
        before = webhooks.violation_count(time_range("24h")), webhooks.violation_series(time_range("1h"))
        rollups.roll_up()
        after = webhooks.violation_count(time_range("24h")), webhooks.violation_series(time_range("1h"))
    assert before == after
    assert before[0] == 3 and sum(before[1]["blocked"]) == 2


def test_many_rows_in_one_minute_make_one_count(app):
    """Integer buckets: a division that yields fractions would group one minute's rows apart."""
    with app.app_context(), time_machine.travel(NOW, tick=False):
        db.session.add_all(_call(NOW - dt.timedelta(hours=2, seconds=s)) for s in range(0, 60, 7))
        db.session.commit()
        rollups.roll_up()
        rows = db.session.scalars(db.select(rollups.MinuteCount).filter_by(source="stripe_calls")).all()
    assert sorted(row.count for row in rows) == [4, 5]  # 10:00:30 back to 09:59:34: two minutes
