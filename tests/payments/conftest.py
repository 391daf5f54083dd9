"""Fixtures for the payments tests: an app on localstripe with an API key."""

from __future__ import annotations

import pytest
import stripe

from tests.support import make_key  # noqa: F401  (re-exported for the payments tests)

FAST_RETRIES = {"STRIPE_RETRY_MIN_WAIT": 0.01, "STRIPE_RETRY_MAX_WAIT": 0.02, "STRIPE_TIMEOUT_SECONDS": 5.0}


@pytest.fixture
def payments_app(make_app, proxy, stripe_contract):
    """The app, talking to localstripe through the emulator proxy (faults, Stripe's idempotency).

    Afterwards every request the gateway sent must validate against Stripe's
    published OpenAPI spec (the contract of what we send)."""
    yield make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    assert_contract(proxy, stripe_contract)


def assert_contract(proxy, contract) -> None:
    problems = []
    for sent in proxy.requests:
        if sent.method == "POST":
            problems += [f"{sent.method} {sent.path}: {p}" for p in contract.validate(sent.method, sent.path, sent.form)]
    assert not problems, "requests that break Stripe's API contract:\n" + "\n".join(problems)


@pytest.fixture
def auth(payments_app):
    return make_key(payments_app)


@pytest.fixture
def api(payments_app, auth):
    """A test client that sends the API key."""
    client = payments_app.test_client()

    class Api:
        def post(self, path, json=None, headers=None, **kw):
            return client.post(f"/api/v1/payments{path}", json=json, headers={**auth, **(headers or {})}, **kw)

        def get(self, path, headers=None):
            return client.get(f"/api/v1/payments{path}", headers={**auth, **(headers or {})})

    return Api()


@pytest.fixture
def localstripe(localstripe_url):
    """stripe-python talking straight to localstripe (to look behind our back)."""
    return stripe.StripeClient("sk_test_inspect", base_addresses={"api": localstripe_url}, max_network_retries=0)


def stripe_customers_for(localstripe, user_id: str) -> list:
    return [c for c in localstripe.v1.customers.list(params={"limit": 100}).auto_paging_iter()
            if (c.to_dict().get("metadata") or {}).get("kamiyo_user_id") == user_id]
