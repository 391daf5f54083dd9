"""`make run`'s runner on a fresh instance folder: demo mode end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def start_runner(instance: Path, port: int, stripe_port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
    env.update(KAMIYO_INSTANCE_PATH=str(instance), PORT=str(port), DEMO_STRIPE_PORT=str(stripe_port),
               WEB_CONCURRENCY="1")
    return subprocess.Popen(
        [sys.executable, "-m", "devtools.run"], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_healthy(port: int, proc: subprocess.Popen, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            response = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
            if response.status_code == 200:
                return response.json()
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting answers late
            pass
        time.sleep(0.2)
    raise AssertionError("the service did not answer /health within a minute")


def ctrl_c(proc: subprocess.Popen) -> str:
    # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    return output


def test_demo_mode_starts_serves_and_stops_cleanly(tmp_path):
    instance = tmp_path / "instance"
    port, stripe_port = free_port(), free_port()
    proc = start_runner(instance, port, stripe_port)
    try:
        assert wait_healthy(port, proc) == {"status": "ok", "database": "ok"}
        payments = requests.get(f"http://127.0.0.1:{port}/api/v1/payments/health", timeout=5)
        assert payments.status_code == 200 and payments.json()["stripe"]["reachable"] is True
        # localstripe answers on loopback, as the Stripe backend of the demo.
        assert requests.get(f"http://127.0.0.1:{stripe_port}/v1/customers",
                            auth=("sk_test_x", ""), timeout=5).status_code == 200
    finally:
        output = ctrl_c(proc)
    key_line = [line for line in output.splitlines() if "API key:" in line]
    assert key_line, output
    first_key = key_line[0].split()[-1]
    assert first_key.startswith("kmy_")
    assert "Stopped." in output and "Traceback" not in output
    # One scheduler process beside the workers (weekly version check, alert evaluation).
    assert "Scheduler running (UTC)" in output and "Scheduler stopped." in output
    for p in (port, stripe_port):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{p}/health", timeout=1)

    # A second start migrates nothing new and shows the same demo credentials.
    proc = start_runner(instance, port, stripe_port)
    try:
        wait_healthy(port, proc)
    finally:
        output = ctrl_c(proc)
    assert first_key in output
