"""The in-process localstripe: its webhook delay and registrations, over real HTTP."""

from __future__ import annotations

import pickle
import time

import pytest
import stripe

from devtools.localstripe_server import LocalStripe


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
    event = stripe.Webhook.construct_event(delivery.payload, delivery.signature, webhook_receiver.secret)
    assert event.data.object.email == "delay@example.com"


def test_unregistered_webhook_gets_nothing(fast_webhooks, webhook_receiver, upstream):
    assert LocalStripe.unregister_webhook(webhook_receiver.hook_id) is True
    assert LocalStripe.unregister_webhook(webhook_receiver.hook_id) is False
    customer = upstream.v1.customers.create(params={"email": "gone@example.com"})
    time.sleep(0.4)
    assert webhook_receiver.events("customer.created", customer.id) == []


def test_localstripe_starts_again_in_the_same_process_on_a_new_loop():
    # localstripe's module-level app binds to the first loop that serves it; a second
    # session in one process (mutmut runs pytest so) must still get a working emulator.
    for _ in range(2):
        server = LocalStripe()
        url = server.start()
        try:
            client = stripe.StripeClient("sk_test_restart", base_addresses={"api": url}, max_network_retries=0)
            assert client.v1.customers.create(params={"email": "again@example.com"}).id.startswith("cus_")
        finally:
            server.stop()


def saved_customer(path, customer_id: str):
    with open(path, "rb") as fh:
        return pickle.load(fh).get(f"customer:{customer_id}")


def test_persist_to_saves_each_change_before_it_is_answered(tmp_path, upstream):
    path = tmp_path / "state.pickle"
    LocalStripe.persist_to(path)
    try:
        customer = upstream.v1.customers.create(params={"email": "kept@example.com"})
        assert saved_customer(path, customer.id).email == "kept@example.com"
        # localstripe updates objects in place: the change is saved all the same.
        upstream.v1.customers.update(customer.id, params={"email": "moved@example.com"})
        assert saved_customer(path, customer.id).email == "moved@example.com"
        upstream.v1.customers.delete(customer.id)
        assert saved_customer(path, customer.id) is None
        before = path.stat().st_mtime_ns
        upstream.v1.customers.list()  # a read saves nothing
        assert path.stat().st_mtime_ns == before
    finally:
        LocalStripe.persist_to(None)
    upstream.v1.customers.create(params={"email": "not-kept@example.com"})
    assert path.stat().st_mtime_ns == before
