"""`make run` wires the emulator's webhooks to the service: registered, signed, processed."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from tests.demo_runner import ROOT, listening, session_processes, start_runner, stop_and_time, wait_for_output
from tests.support import free_port

pytestmark = pytest.mark.slow


def printed(lines: list[str], marker: str) -> list[str]:
    """The command printed on the line after `marker`, as arguments run with this interpreter."""
    text = [line.strip() for line in lines]
    words = shlex.split(text[text.index(next(t for t in text if t.startswith(marker))) + 1])
    at = words.index(".venv/bin/flask")
    return [*words[:at], sys.executable, "-m", "flask", *words[at + 1:]]


def run_printed(words: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
    env.update(word.split("=", 1) for word in words if re.match(r"^[A-Z_]+=", word))
    args = [word for word in words if not re.match(r"^[A-Z_]+=", word)]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def stored_events(instance, where: str) -> list[tuple]:
    db = sqlite3.connect(instance / "kamiyo.db")
    try:
        return list(db.execute(f"SELECT type, status, api_version, livemode FROM webhook_events WHERE {where}"))
    finally:
        db.close()


def test_the_emulators_events_reach_the_service_and_a_printed_command_sends_one(tmp_path):
    instance = tmp_path / "instance"
    ports = free_port(), free_port(), free_port()
    proc = start_runner(instance, *ports)
    try:
        wait_for_output(proc, "Ready:")
        output = "".join(proc.lines)
        assert f"the emulator sends its events to http://127.0.0.1:{ports[0]}/api/v1/webhooks/stripe" in output
        assert f"STRIPE_WEBHOOK_SECRET, kept in {instance / 'demo-secrets.json'}" in output
        assert "whsec_" not in output
        key = next(line for line in proc.lines if "API key:" in line).split()[-1]
        made = requests.post(f"http://127.0.0.1:{ports[0]}/api/v1/payments/customers", timeout=30,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"user_id": "hooked-u1", "email": "ada@example.com"})
        assert made.status_code == 201, made.text
        # localstripe waits a second before each event; it signs with the demo's secret.
        stripe_id = made.json()["stripe_customer_id"]
        deadline = time.monotonic() + 20
        while not (found := stored_events(instance, f"object_id = '{stripe_id}' AND type = 'customer.created'")):
            assert time.monotonic() < deadline, "the emulator's customer.created never arrived:\n" + "".join(proc.lines)
            time.sleep(0.2)
        assert found == [("customer.created", "processed", "2017-08-15", 0)]

        sent = run_printed(printed(proc.lines, "send a signed test event:"))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert re.search(r"\(customer\.created\) -> .*: 200 ", sent.stdout), sent.stdout
        assert [row[:2] for row in stored_events(instance, "event_id LIKE 'evt_test_%'")] == [
            ("customer.created", "ignored")]

        # The emulator's version (2017-08-15, on every event it sends) raises no mismatch in the demo.
        checked = run_printed(["KAMIYO_DEMO_MODE=1", f"KAMIYO_INSTANCE_PATH={instance}", ".venv/bin/flask",
                               "--app", "wsgi", "stripe-version", "check", "--local", "--json"])
        report = checked.stdout[checked.stdout.index("{"):]
        assert '"webhook_events"' in report and "2017-08-15" not in report, checked.stdout

        # A demo command finds this demo's Stripe (the proxy, on its free port) and URL: preflight
        # sees the webhook endpoint the runner registered, pointing at the service.
        # (A version ten days old on the tests' clock: the pinned one grows critical under
        # --travel=730d, and preflight rightly fails on that alone.)
        recent = (dt.date.today() - dt.timedelta(days=10)).isoformat()
        checked = run_printed(["KAMIYO_DEMO_MODE=1", f"KAMIYO_INSTANCE_PATH={instance}",
                               f"STRIPE_API_VERSION={recent}", ".venv/bin/flask", "--app", "wsgi", "preflight"])
        assert checked.returncode in (0, 1), checked.stdout + checked.stderr
        assert re.search(rf"\[ok  \] webhook endpoint: .*http://127\.0\.0\.1:{ports[0]}/api/v1/webhooks/stripe",
                         checked.stdout), checked.stdout
        assert f"answers at http://127.0.0.1:{ports[2]}" in checked.stdout, checked.stdout
    finally:
        stop_and_time(proc, proc.pid, signal.SIGTERM)
    assert session_processes(proc.pid) == [] and listening(*ports) == []
