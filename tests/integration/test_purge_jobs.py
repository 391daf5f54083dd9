"""The daily purge jobs, run as the scheduler runs them (by name), delete what has expired."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from kamiyo import scheduler
from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.stripe_gateway.models import StripeCall
from kamiyo.webhooks.models import RateLimitViolation, WebhookEvent

pytestmark = pytest.mark.both_databases

OLD = dt.timedelta(days=40)


def count(model) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(model))


def test_the_webhook_purge_job_deletes_old_events_and_violations(app):
    now = utcnow()
    with app.app_context():
        for name, at in (("old", now - OLD), ("new", now)):
            db.session.add(WebhookEvent(event_id=f"evt_purge_{name}", type="customer.created", status="processed",
                                        attempts=1, created=at, received_at=at, payload=json.dumps({})))
            db.session.add(RateLimitViolation(client_ip="192.0.2.1", occurred_at=at, limit="1/minute",
                                              endpoint="/api/v1/webhooks/stripe"))
        db.session.commit()
    assert scheduler.run_once(app, "webhook-purge", "purge-test")
    with app.app_context():
        assert list(db.session.scalars(db.select(WebhookEvent.event_id))) == ["evt_purge_new"]
        assert count(RateLimitViolation) == 1


def test_the_payments_purge_job_deletes_old_stripe_call_records(app):
    now = utcnow()
    with app.app_context():
        for at in (now - OLD, now):
            db.session.add(StripeCall(operation="customer.create", attempt=1, outcome="success", created_at=at))
        db.session.commit()
    assert scheduler.run_once(app, "payments-purge", "purge-test")
    with app.app_context():
        assert [c.created_at > now - dt.timedelta(days=1) for c in db.session.scalars(db.select(StripeCall))] == [True]
