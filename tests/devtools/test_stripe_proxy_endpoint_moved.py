"""The emulator proxy's webhook endpoints. An endpoint moved from a loopback URL to another
URL (`POST /v1/webhook_endpoints/we_...` with a new `url`) must no longer be delivered to at its
old URL through localstripe, as Stripe would never do."""

from __future__ import annotations

import time
import uuid

from devtools.localstripe_server import LocalStripe
from tests.devtools.test_stripe_proxy_endpoints import client_for


def test_an_endpoint_moved_off_loopback_no_longer_delivers_to_its_old_url(proxy, serve_app):
    from flask import Flask, request

    previous = LocalStripe.webhook_delay()
    LocalStripe.set_webhook_delay(0.05)
    received: list[bytes] = []
    receiver = Flask("old-receiver")

    @receiver.post("/hook")
    def hook():
        received.append(request.get_data())
        return "ok"

    client = client_for(proxy.url)
    endpoint = client.v1.webhook_endpoints.create(params={
        "url": serve_app(receiver) + "/hook", "enabled_events": ["customer.created"]})
    try:
        client.v1.webhook_endpoints.update(
            endpoint.id, params={"url": "https://payments.example.com/api/v1/webhooks/stripe"})
        assert client.v1.webhook_endpoints.retrieve(endpoint.id).url.startswith("https://payments.example.com")
        customer = client.v1.customers.create(params={"email": f"{uuid.uuid4().hex[:12]}@example.com"})
        time.sleep(1.0)
        assert not [body for body in received if customer.id.encode() in body], (
            "the endpoint now points at https://payments.example.com, yet its old loopback URL got the event")
    finally:
        LocalStripe.unregister_webhook(endpoint.id)
        LocalStripe.set_webhook_delay(previous)
