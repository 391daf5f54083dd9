"""A Stripe 4xx is final: tried once, whatever its body looks like."""

from __future__ import annotations

import time

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.stripe_gateway.gateway import get_gateway
from kamiyo.stripe_gateway.models import StripeCall


def test_a_404_without_a_stripe_error_body_is_tried_once(stripe_app):
    """localstripe has no webhook-endpoints API: its 404 is an HTML page, which stripe-python
    turns into an APIError (the class of Stripe's 5xx). Retried, it cost the version check
    three attempts and their backoff (1 s + 2 s by default) in the demo."""
    with stripe_app.app_context():
        started = time.monotonic()
        assert get_gateway().list_webhook_endpoints() is None
        elapsed = time.monotonic() - started
        attempts = db.session.execute(
            select(StripeCall.attempt, StripeCall.outcome, StripeCall.error_type, StripeCall.http_status).where(
                StripeCall.operation == "webhook_endpoint.list"
            )
        ).all()
    assert [tuple(row) for row in attempts] == [(1, "error", "APIError", 404)]
    assert elapsed < 1.0, elapsed  # no backoff slept
