"""The in-process localstripe: its webhook delay and registrations, over real HTTP."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import pytest
import requests
import stripe

from devtools.localstripe_server import LocalStripe

SECRET = "whsec_localstripe_server_tests"


@dataclass
class Delivery:
    arrived: float      # time.monotonic()
    payload: bytes
    signature: str

    @property
    def event(self) -> dict:
        return json.loads(self.payload)


class Receiver:
    def __init__(self, hook_id: str) -> None:
        self.hook_id = hook_id  # its id in localstripe's /_config/webhooks
        self.deliveries: list[Delivery] = []

    def events(self, type_: str, object_id: str) -> list[Delivery]:
        return [d for d in list(self.deliveries)
                if d.event["type"] == type_ and d.event["data"]["object"]["id"] == object_id]

    def wait_for(self, type_: str, object_id: str, timeout: float = 10.0) -> Delivery:
        deadline = time.monotonic() + timeout
        while not self.events(type_, object_id):
            if time.monotonic() > deadline:
                pytest.fail(f"no {type_} for {object_id} in {timeout} s")
            time.sleep(0.01)
        return self.events(type_, object_id)[0]


@pytest.fixture
def webhook_receiver(localstripe_url, serve_app):
    """A receiver registered in localstripe (and unregistered afterwards)."""
    from flask import Flask, request

    receiver = Receiver(f"test-{uuid.uuid4().hex[:8]}")
    app = Flask("receiver")

    @app.post("/hook")
    def hook():
        receiver.deliveries.append(Delivery(time.monotonic(), request.get_data(),
                                            request.headers.get("Stripe-Signature", "")))
        return "ok"

    url = serve_app(app) + "/hook"
    answer = requests.post(f"{localstripe_url}/_config/webhooks/{receiver.hook_id}",
                           data={"url": url, "secret": SECRET}, timeout=5)
    assert answer.status_code == 200
    yield receiver
    LocalStripe.unregister_webhook(receiver.hook_id)


@pytest.fixture
def fast_webhooks():
    """localstripe sends each event 50 ms after it happens, not 1 s (restored afterwards)."""
    previous = LocalStripe.webhook_delay()
    LocalStripe.set_webhook_delay(0.05)
    try:
        yield
    finally:
        LocalStripe.set_webhook_delay(previous)


@pytest.fixture
def upstream(localstripe_url):
    return stripe.StripeClient("sk_test_localstripe_server", base_addresses={"api": localstripe_url},
                               max_network_retries=0)


def test_default_webhook_delay_is_localstripes():
    assert LocalStripe.webhook_delay() == 1.0
    with pytest.raises(ValueError):
        LocalStripe.set_webhook_delay(-0.1)
    assert LocalStripe.webhook_delay() == 1.0


def test_short_webhook_delay_delivers_signed_events_quickly(fast_webhooks, webhook_receiver, upstream):
    started = time.monotonic()
    customer = upstream.v1.customers.create(params={"email": "delay@example.com"})
    delivery = webhook_receiver.wait_for("customer.created", customer.id, timeout=5)
    assert delivery.arrived - started < 0.7  # localstripe's own delay is 1 s
    # Signed as localstripe signs: stripe-python verifies it.
    event = stripe.Webhook.construct_event(delivery.payload, delivery.signature, SECRET)
    assert event.data.object.email == "delay@example.com"


def test_unregistered_webhook_gets_nothing(fast_webhooks, webhook_receiver, upstream):
    assert LocalStripe.unregister_webhook(webhook_receiver.hook_id) is True
    assert LocalStripe.unregister_webhook(webhook_receiver.hook_id) is False
    customer = upstream.v1.customers.create(params={"email": "gone@example.com"})
    time.sleep(0.4)
    assert webhook_receiver.events("customer.created", customer.id) == []
