"""`make run`'s runner on a fresh instance folder: demo mode end to end."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from tests.demo_runner import ctrl_c, start_runner, wait_for_output, wait_healthy
from tests.support import free_port

pytestmark = pytest.mark.slow


def test_demo_mode_starts_serves_and_stops_cleanly(tmp_path):
    instance = tmp_path / "instance"
    port, stripe_port, proxy_port = free_port(), free_port(), free_port()
    # A version ten days old on the tests' clock: the pinned one grows critical (--travel=730d).
    recent = (dt.date.today() - dt.timedelta(days=10)).isoformat()
    proc = start_runner(instance, port, stripe_port, proxy_port, settings={"STRIPE_API_VERSION": recent})
    try:
        assert wait_healthy(port, proc) == {"status": "ok", "database": "ok"}
        # Anonymous: the status only (Stripe reachable, breaker closed); the detail needs a key.
        payments = requests.get(f"http://127.0.0.1:{port}/api/v1/payments/health", timeout=5)
        assert payments.status_code == 200 and payments.json() == {"status": "ok", "api_version": {"status": "healthy"}}
        # localstripe answers on loopback, as the Stripe backend of the demo.
        assert requests.get(f"http://127.0.0.1:{stripe_port}/v1/customers",
                            auth=("sk_test_x", ""), timeout=5).status_code == 200
        # The app's Stripe is the emulator proxy in front of it: Stripe's headers, a fault queue.
        proxied = requests.get(f"http://127.0.0.1:{proxy_port}/v1/customers", auth=("sk_test_x", ""), timeout=5)
        assert proxied.status_code == 200 and proxied.headers["Request-Id"].startswith("req_")
        fault = requests.post(f"http://127.0.0.1:{proxy_port}/_proxy/faults",
                              data='[{"kind": "status", "status": 503}]', timeout=5)
        assert fault.status_code == 201
        assert requests.get(f"http://127.0.0.1:{proxy_port}/v1/customers", auth=("sk_test_x", ""),
                            timeout=5).status_code == 503
        recorded = requests.get(f"http://127.0.0.1:{proxy_port}/_proxy/requests", timeout=5).json()
        # The app's health probe (customers.list(limit=1)) went through the proxy.
        assert any(r["path"] == "/v1/customers" and r["query"] == "limit=1" and r["status"] == 200
                   for r in recorded), recorded
        wait_for_output(proc, "Scheduler running (UTC)")
        wait_for_output(proc, "Ready:")  # the banner with the key comes once /health answers
        key = next(line for line in proc.lines if "API key:" in line).split()[-1]
        customer = requests.post(f"http://127.0.0.1:{port}/api/v1/payments/customers", timeout=30,
                                 headers={"Authorization": f"Bearer {key}"},
                                 json={"user_id": "demo-u1", "email": "ada@example.com"})
        assert customer.status_code == 201, customer.text
        detail = requests.get(f"http://127.0.0.1:{port}/api/v1/payments/health", timeout=5,
                              headers={"Authorization": f"Bearer {key}"})
        assert detail.status_code == 200 and detail.json()["stripe"]["reachable"] is True
    finally:
        output = ctrl_c(proc)
    key_line = [line for line in output.splitlines() if "API key:" in line]
    assert key_line, output
    first_key = key_line[0].split()[-1]
    assert first_key.startswith("kmy_")
    assert "Stopped." in output and "Traceback" not in output
    assert f"emulator proxy at http://127.0.0.1:{proxy_port}" in output
    assert f"localstripe at http://127.0.0.1:{stripe_port}" in output
    # One scheduler process beside the workers (weekly version check, alert evaluation).
    assert "Scheduler running (UTC)" in output and "Scheduler stopped." in output
    for p in (port, stripe_port, proxy_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{p}/health", timeout=1)

    # A second start migrates nothing new and shows the same demo credentials; the
    # emulator remembers the customer the database remembers, so it can subscribe.
    proc = start_runner(instance, port, stripe_port, proxy_port)
    try:
        wait_healthy(port, proc)
        wait_for_output(proc, "Ready:")
        subscription = requests.post(
            f"http://127.0.0.1:{port}/api/v1/payments/subscriptions", timeout=30,
            headers={"Authorization": f"Bearer {first_key}"},
            json={"customer_id": customer.json()["id"], "price_id": "price_demo_pro_monthly", "tier": "pro",
                  "payment_method": "pm_card_visa"})
        assert subscription.status_code == 201, subscription.text
    finally:
        output = ctrl_c(proc)
    assert first_key in output
