"""The payments metrics move when the behaviour they count happens."""

from __future__ import annotations

import re
import uuid

from devtools.stripe_proxy import Fault


def sample(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_dedup_retry_operation_and_duration_metrics(api, proxy, payments_app):
    client = payments_app.test_client()
    before = {
        "dedup": sample(client, "stripe_idempotency_dedup_total"),
        "retry": sample(client, "stripe_api_retry_total", '{error_type="api_error"}'),
        "created": sample(client, "payment_operations_total", '{operation="customer.create",outcome="created"}'),
        "existing": sample(client, "payment_operations_total", '{operation="customer.create",outcome="existing"}'),
        "keys": sample(client, "stripe_idempotency_key_generation_duration_seconds_count"),
        "calls": sample(client, "stripe_api_request_duration_seconds_count", '{operation="customer.create"}'),
    }
    body = {"user_id": f"m-{uuid.uuid4().hex[:8]}", "email": "m@example.com"}
    proxy.add_faults(Fault("status", 500, path=r"^/v1/customers$"))
    assert api.post("/customers", json=body).status_code == 201
    assert api.post("/customers", json=body).status_code == 200

    assert sample(client, "stripe_idempotency_dedup_total") == before["dedup"] + 1
    assert sample(client, "stripe_api_retry_total", '{error_type="api_error"}') == before["retry"] + 1
    assert sample(client, "payment_operations_total",
                  '{operation="customer.create",outcome="created"}') == before["created"] + 1
    assert sample(client, "payment_operations_total",
                  '{operation="customer.create",outcome="existing"}') == before["existing"] + 1
    assert sample(client, "stripe_idempotency_key_generation_duration_seconds_count") >= before["keys"] + 1
    assert sample(client, "stripe_api_request_duration_seconds_count",
                  '{operation="customer.create"}') == before["calls"] + 2
    assert "payment_circuit_breaker_state" in client.get("/metrics").get_data(as_text=True)


def test_every_transient_error_type_has_its_seed_label():
    from kamiyo.stripe_gateway.errors import TRANSIENT_ERRORS
    from kamiyo.stripe_gateway.retry import ERROR_LABELS

    # A new transient type needs a label here too: its series is initialised from this table.
    assert {error.__name__ for error in TRANSIENT_ERRORS} == {"APIConnectionError", "RateLimitError", "APIError"}
    assert ERROR_LABELS == {"APIConnectionError": "network", "RateLimitError": "rate_limit", "APIError": "api_error"}


def test_retries_and_outcomes_are_counted_under_their_labels(api, proxy, payments_app):
    client = payments_app.test_client()
    series = {
        "network": ("stripe_api_retry_total", '{error_type="network"}'),
        "rate_limit": ("stripe_api_retry_total", '{error_type="rate_limit"}'),
        "api_error": ("stripe_api_retry_total", '{error_type="api_error"}'),
        "transient_error": ("payment_operations_total", '{operation="customer.create",outcome="transient_error"}'),
        "created": ("payment_operations_total", '{operation="customer.create",outcome="created"}'),
    }
    before = {name: sample(client, *where) for name, where in series.items()}
    body = {"user_id": f"m-{uuid.uuid4().hex[:8]}", "email": "m@example.com"}
    # Three attempts (STRIPE_RETRY_ATTEMPTS), three transient failures: the last is not retried, and
    # the request fails (502, Stripe's error) but may be sent again.
    proxy.add_faults(Fault("drop_before", path=r"^/v1/customers$"), Fault("status", 429, path=r"^/v1/customers$"),
                     Fault("status", 503, path=r"^/v1/customers$"))
    assert api.post("/customers", json=body).status_code == 502
    assert api.post("/customers", json=body).status_code == 201

    assert {name: sample(client, *where) - before[name] for name, where in series.items()} == {
        "network": 1.0, "rate_limit": 1.0, "api_error": 0.0, "transient_error": 1.0, "created": 1.0}


def test_the_contract_check_catches_a_request_stripe_would_reject(stripe_contract):
    import pytest

    from devtools.stripe_proxy import RecordedRequest
    from tests.support import assert_contract

    bad = RecordedRequest(method="POST", path="/v1/customers", query="", headers={}, body=b"",
                          form={"email": "a@b.co", "kamiyo_user_id": "u-1"}, idempotency_key=None, status=200,
                          outcome="forwarded", request_id="req_x", started_at=0.0, duration=0.0)

    class Recorded:
        requests = [bad]

    with pytest.raises(AssertionError, match="kamiyo_user_id"):
        assert_contract(Recorded(), stripe_contract)
