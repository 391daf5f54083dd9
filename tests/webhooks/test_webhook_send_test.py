"""`flask --app wsgi webhooks send-test TYPE`: a signed test event to the running service."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from kamiyo.webhooks.models import WebhookEvent
from tests.support import closed_port_url

# Every type the service handles, and one it does not: each is taken, none changes our rows.
CASES = {
    "customer.created": "ignored",
    "customer.updated": "ignored",
    "customer.deleted": "processed",
    "customer.subscription.created": "ignored",
    "customer.subscription.updated": "ignored",
    "customer.subscription.deleted": "ignored",
    "invoice.paid": "processed",
    "invoice.payment_failed": "processed",
    "payment_intent.succeeded": "processed",
    "payment_intent.payment_failed": "processed",
    "charge.refunded": "ignored",
}


@pytest.fixture
def served(app, serve_app):
    return serve_app(app)


@pytest.mark.parametrize("event_type", list(CASES))
def test_each_type_is_signed_taken_and_stored(app, served, event_type):
    result = app.test_cli_runner().invoke(args=["webhooks", "send-test", event_type, "--url", served])
    assert result.exit_code == 0, result.output
    found = re.fullmatch(rf"(evt_test_[0-9a-f]{{12}}) \({re.escape(event_type)}\) -> {served}/api/v1/webhooks/stripe: "
                         r"200 (.*)\n", result.output)
    assert found, result.output
    with app.app_context():
        stored = app.extensions["sqlalchemy"].session.scalar(
            select(WebhookEvent).where(WebhookEvent.event_id == found.group(1)))
        assert (stored.type, stored.status, stored.livemode) == (event_type, CASES[event_type], False)
        assert stored.api_version == app.config["STRIPE_API_VERSION"]


def test_another_secret_is_refused_and_says_so(make_app, serve_app):
    url = serve_app(make_app(STRIPE_WEBHOOK_SECRET="whsec_the_service"))
    result = make_app(STRIPE_WEBHOOK_SECRET="whsec_another").test_cli_runner().invoke(
        args=["webhooks", "send-test", "customer.created", "--url", url])
    assert result.exit_code == 1
    assert ": 400 " in result.output and "whsec_" not in result.output


def test_no_server_is_one_line(runner):
    url = closed_port_url()
    result = runner.invoke(args=["webhooks", "send-test", "customer.created", "--url", url])
    assert result.exit_code == 1
    assert result.output == f"Error: no Kamiyo server answers at {url}: start it (`make run`) or pass --url\n"


@pytest.mark.parametrize("bad", ["", "customer created", "a.b;rm", "x" * 129])
def test_a_type_that_is_no_event_type_is_refused(runner, bad):
    result = runner.invoke(args=["webhooks", "send-test", bad])
    assert result.exit_code == 2 and "an event type such as customer.created" in result.output
