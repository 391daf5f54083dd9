"""The emulator proxy's webhook endpoints (`/v1/webhook_endpoints`), which localstripe lacks:
Stripe's shapes through stripe-python, kept per API key, and a loopback endpoint really
receives the events it is enabled for, signed with its own secret."""

from __future__ import annotations

import time
import uuid

import pytest
import stripe

from devtools.localstripe_server import LocalStripe


def client_for(url: str, key: str = "sk_test_endpoints_one") -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=0,
                               http_client=stripe.RequestsClient(timeout=5))


def test_create_list_retrieve_update_delete_per_api_key(proxy):
    client = client_for(proxy.url)
    created = client.v1.webhook_endpoints.create(params={
        "url": "https://payments.example.com/api/v1/webhooks/stripe",
        "enabled_events": ["customer.created", "invoice.paid"], "api_version": "2026-10-28.endive"})
    assert created.id.startswith("we_") and created.secret.startswith("whsec_")  # shown once, at creation
    assert (created.status, created.api_version, created.enabled_events) == (
        "enabled", "2026-10-28.endive", ["customer.created", "invoice.paid"])

    [listed] = client.v1.webhook_endpoints.list().data
    assert listed.id == created.id and "secret" not in listed.to_dict()
    assert client_for(proxy.url, "sk_test_endpoints_two").v1.webhook_endpoints.list().data == []  # another account

    updated = client.v1.webhook_endpoints.update(created.id, params={"disabled": True})
    assert updated.status == "disabled"
    assert client.v1.webhook_endpoints.retrieve(created.id).status == "disabled"

    assert client.v1.webhook_endpoints.delete(created.id).deleted is True
    assert client.v1.webhook_endpoints.list().data == []
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.webhook_endpoints.retrieve(created.id)
    assert missing.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.create(params={"url": "https://x.example.com/hook", "enabled_events": []})


def test_a_loopback_endpoint_receives_its_events_signed_with_its_secret(proxy, serve_app):
    from flask import Flask, request

    previous = LocalStripe.webhook_delay()
    LocalStripe.set_webhook_delay(0.05)
    received: list[tuple[bytes, str]] = []
    receiver = Flask("receiver")

    @receiver.post("/hook")
    def hook():
        received.append((request.get_data(), request.headers.get("Stripe-Signature", "")))
        return "ok"

    client = client_for(proxy.url)
    endpoint = client.v1.webhook_endpoints.create(params={
        "url": serve_app(receiver) + "/hook", "enabled_events": ["customer.created"]})
    try:
        email = f"{uuid.uuid4().hex[:12]}@example.com"
        customer = client.v1.customers.create(params={"email": email})
        deadline = time.monotonic() + 10
        while not any(customer.id.encode() in body for body, _ in received):
            assert time.monotonic() < deadline, "no customer.created delivered"
            time.sleep(0.02)
        body, signature = next((b, s) for b, s in received if customer.id.encode() in b)
        event = stripe.Webhook.construct_event(body, signature, endpoint.secret)
        assert event["type"] == "customer.created"
        client.v1.customers.update(customer.id, params={"name": "not enabled for customer.updated"})

        client.v1.webhook_endpoints.delete(endpoint.id)
        client.v1.customers.create(params={"email": "after-" + email})
        time.sleep(0.5)
        assert [stripe.Webhook.construct_event(b, s, endpoint.secret)["type"] for b, s in received] == [
            "customer.created"]
    finally:
        LocalStripe.unregister_webhook(endpoint.id)
        LocalStripe.set_webhook_delay(previous)


def test_a_webhook_registered_with_localstripe_through_the_proxy_is_listed_for_every_key(proxy):
    """What the demo does (devtools/run.py): preflight then finds the demo's endpoint."""
    import requests

    hook = f"demo-{uuid.uuid4().hex[:6]}"
    answer = requests.post(f"{proxy.url}/_config/webhooks/{hook}", timeout=5,
                           data={"url": "http://127.0.0.1:9/api/v1/webhooks/stripe", "secret": "whsec_demo_x"})
    assert answer.status_code == 200
    try:
        for key in ("sk_test_endpoints_one", "sk_test_endpoints_two"):
            [listed] = client_for(proxy.url, key).v1.webhook_endpoints.list().data
            assert (listed.id, listed.url, listed.enabled_events, listed.status, listed.api_version) == (
                f"we_config_{hook}", "http://127.0.0.1:9/api/v1/webhooks/stripe", ["*"], "enabled", None)
            assert "secret" not in listed.to_dict()
        with pytest.raises(stripe.InvalidRequestError):
            client_for(proxy.url).v1.webhook_endpoints.delete(f"we_config_{hook}")
    finally:
        LocalStripe.unregister_webhook(hook)
