"""Fixtures of the emulator tests: a webhook receiver registered in localstripe, and its short delay."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

import pytest
import requests

from devtools.localstripe_server import LocalStripe

WEBHOOK_SECRET = "whsec_localstripe_server_tests"  # what the receiver registers with


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
        self.secret = WEBHOOK_SECRET  # what localstripe signs its deliveries with
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
                           data={"url": url, "secret": WEBHOOK_SECRET}, timeout=5)
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
