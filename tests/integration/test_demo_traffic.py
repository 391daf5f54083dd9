"""`flask --app wsgi demo traffic`: its refusals, and the signature it sends."""

from __future__ import annotations

import time

import pytest

from kamiyo.demo_traffic import stripe_signature
from kamiyo.webhooks.verify import VerificationError, verify_event
from tests.support import closed_port_url


def test_it_refuses_outside_demo_mode(runner):
    result = runner.invoke(args=["demo", "traffic"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: demo traffic only runs in demo mode (KAMIYO_DEMO_MODE=1): it makes customers, declines cards "
        "and makes Stripe fail on purpose\n"
    )


def test_a_server_that_is_not_running_is_one_line(make_app):
    url = closed_port_url()
    result = make_app(DEMO_MODE=True).test_cli_runner().invoke(args=["demo", "traffic", "--url", url])
    assert result.exit_code == 1
    assert result.output == f"Error: no Kamiyo server answers at {url}: start the demo with `make run` (or pass --url)\n"


def test_its_signature_is_the_one_the_webhook_endpoint_checks():
    body = b'{"id": "evt_1", "type": "customer.created", "created": 1, "data": {"object": {}}}'
    now = int(time.time())
    header = stripe_signature(body, "whsec_demo", now)
    assert verify_event(body, header, ["whsec_demo"], 300)["id"] == "evt_1"
    with pytest.raises(VerificationError, match="signature does not match"):
        verify_event(body, header, ["whsec_other"], 300)
