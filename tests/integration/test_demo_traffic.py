"""`flask --app wsgi demo traffic` against the demo that `make run` starts: what it leaves in the database."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import subprocess
import sys
import time

import pytest
import requests

from kamiyo.demo_traffic import stripe_signature
from kamiyo.webhooks.verify import VerificationError, verify_event
from tests.demo_runner import ROOT, ctrl_c, start_runner, wait_for_output, wait_healthy
from tests.support import closed_port_url, free_port, wait_until


def test_it_refuses_outside_demo_mode(runner):
    result = runner.invoke(args=["demo", "traffic"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: demo traffic only runs in demo mode (KAMIYO_DEMO_MODE=1): it makes customers, declines cards "
        "and makes Stripe fail on purpose\n"
    )


def test_a_server_that_is_not_running_is_one_line(make_app):
    url = closed_port_url()
    result = make_app(DEMO_MODE=True).test_cli_runner().invoke(args=["demo", "traffic", "--url", url])
    assert result.exit_code == 1
    assert result.output == f"Error: no Kamiyo server answers at {url}: start the demo with `make run` (or pass --url)\n"


def test_its_signature_is_the_one_the_webhook_endpoint_checks():
    body = b'{"id": "evt_1", "type": "customer.created", "created": 1, "data": {"object": {}}}'
    now = int(time.time())
    header = stripe_signature(body, "whsec_demo", now)
    assert verify_event(body, header, ["whsec_demo"], 300)["id"] == "evt_1"
    with pytest.raises(VerificationError, match="signature does not match"):
        verify_event(body, header, ["whsec_other"], 300)


def printed_command(lines: list[str]) -> list[str]:
    """The `demo traffic` command `make run` printed, as arguments, run with this interpreter."""
    text = "".join(lines)
    [line] = [each for each in text.splitlines() if "demo traffic --url" in each]
    words = shlex.split(line)
    at = words.index(".venv/bin/flask")
    return [*words[:at], sys.executable, "-m", "flask", *words[at + 1:]]


def rows(db, query: str) -> list[tuple]:
    return [tuple(row) for row in db.execute(query)]


def attempts_by_key(db, where: str) -> list[list[tuple]]:
    """The attempts of each Stripe call (one idempotency key each) that matches `where`."""
    keys = rows(db, f"SELECT DISTINCT idempotency_key_prefix FROM stripe_calls WHERE {where} ORDER BY id")
    return [
        rows(db, "SELECT operation, attempt, outcome, error_type, http_status FROM stripe_calls "
                 f"WHERE idempotency_key_prefix = '{key}' ORDER BY id")
        for (key,) in keys
    ]


def signed_in_overview(port: int, lines: list[str]) -> str:
    """Sign in with the login `make run` printed, as a browser would, and read the overview."""
    found = next(re.search(r"sign in as (\S+) / (\S+)", line) for line in lines if "sign in as" in line)
    session = requests.Session()
    page = session.get(f"http://127.0.0.1:{port}/login", timeout=10).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = session.post(f"http://127.0.0.1:{port}/login", timeout=10, allow_redirects=False,
                          data={"email": found.group(1), "password": found.group(2), "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"] == "/dashboard/"
    return session.get(f"http://127.0.0.1:{port}/dashboard/", timeout=30).text


def card(html: str, title: str) -> str:
    found = re.search(rf'<span class="card-title">{re.escape(title)}</span>\s*<span class="card-value">([^<]+)</span>',
                      html)
    assert found, title
    return found.group(1)


@pytest.mark.slow
def test_demo_traffic_leaves_every_kind_of_number_behind(tmp_path):
    instance = tmp_path / "instance"
    port, stripe_port, proxy_port = free_port(), free_port(), free_port()
    # Two workers, as `make run` has by default: without Redis each has its own circuit breaker.
    proc = start_runner(instance, port, stripe_port, proxy_port, workers=2)
    try:
        wait_healthy(port, proc)
        wait_for_output(proc, "Press Ctrl-C to stop.")
        command = printed_command(proc.lines)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_"))}
        env.update(word.split("=", 1) for word in command if re.match(r"^[A-Z_]+=", word))
        args = [word for word in command if not re.match(r"^[A-Z_]+=", word)]
        assert args[-4:] == ["--url", f"http://127.0.0.1:{port}", "--stripe-proxy", f"http://127.0.0.1:{proxy_port}"]
        assert env["KAMIYO_DEMO_MODE"] == "1" and env["KAMIYO_INSTANCE_PATH"] == str(instance)
        started = time.monotonic()
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        took = time.monotonic() - started
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        blocked = sqlite3.connect(instance / "kamiyo.db")
        try:  # blocks are written together, within a second of the last one
            wait_until(lambda: rows(blocked, "SELECT sum(count) FROM rate_limit_violations") == [(5,)], timeout=10)
        finally:
            blocked.close()
        overview = signed_in_overview(port, proc.lines)
    finally:
        ctrl_c(proc)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "delivered twice: processed, then duplicate" in out
    # make run's demo half-opens the breaker after 10 s (production: 60), so the run stays short.
    opened_for = float(re.search(r"half-open after ([\d.]+) s", out).group(1))
    assert 10 <= opened_for < 15, out
    assert took < 60, out
    assert out.splitlines()[-6:] == [
        "  customers      7 created, 1 repeat answered from the first",
        "  subscriptions  4 created, 1 declined (402)",
        "  Stripe calls   3 failed attempts retried under the same key",
        f"  breaker        opened after 5 failures, refused 1 request, closed after {opened_for:.1f} s",
        "  webhooks       1 processed, 1 duplicate, 1 failed",
        "  rate limit     35 unsigned posts from 127.0.0.2: 30 refused, 5 blocked",
    ]

    db = sqlite3.connect(instance / "kamiyo.db")
    try:
        assert rows(db, "SELECT count(*) FROM customers") == [(7,)]
        assert rows(db, "SELECT status, count(*) FROM subscriptions GROUP BY status") == [("active", 4)]
        # The declined card: one attempt, never retried, and the operation failed with it.
        assert rows(db, "SELECT operation, status, error_code FROM payment_operations WHERE status != 'succeeded'") == [
            ("subscription.create", "failed", "CardError")]
        assert attempts_by_key(db, "error_type = 'CardError'") == [
            [("payment_method.attach", 1, "error", "CardError", 402)]]
        # Retried under one key: a 503 and a 429, then made; a lost reply, then Stripe's stored answer.
        assert attempts_by_key(db, "attempt > 1") == [
            [("customer.create", 1, "error", "APIError", 503), ("customer.create", 2, "error", "RateLimitError", 429),
             ("customer.create", 3, "success", None, 200)],
            [("subscription.create", 1, "error", "APIConnectionError", None),
             ("subscription.create", 2, "success", None, 200)],
        ]
        # The breaker: five failed calls open it, a call is refused without Stripe, the probe closes it.
        assert attempts_by_key(db, "outcome = 'breaker_open'") == [
            [("customer.create", 1, "error", "APIError", 503)] * 5
            + [("customer.create", 0, "breaker_open", None, None), ("customer.create", 1, "success", None, 200)]
        ]
        # The duplicate delivery changed nothing (one row, one attempt); the failed one is kept with its error.
        assert sorted(rows(db, "SELECT type, status, attempts, last_error FROM webhook_events "
                               "WHERE event_id LIKE 'evt_demo_%'")) == [
            ("customer.subscription.updated", "failed", 1, "ValueError: year 10000 is out of range"),
            ("customer.updated", "processed", 1, None),
        ]
        # make run registers the emulator's webhook: its own deliveries were all taken.
        assert {status for (status,) in rows(db, "SELECT DISTINCT status FROM webhook_events "
                                                 "WHERE event_id NOT LIKE 'evt_demo_%'")} <= {"processed", "ignored"}
        # A counter per IP and minute (two if the burst straddled a minute), not a row per 429.
        assert rows(db, 'SELECT client_ip, endpoint, "limit", user_agent, sum(count) FROM rate_limit_violations '
                        'GROUP BY client_ip, endpoint, "limit", user_agent') == [
            ("127.0.0.2", "/api/v1/webhooks/stripe", "30 per 1 minute", "kamiyo-demo-traffic (unsigned burst)", 5)]
        assert rows(db, "SELECT count(*) <= 2 FROM rate_limit_violations") == [(1,)]
    finally:
        db.close()
    # `make run`, `demo traffic`, then a login: the dashboard shows the live numbers.
    assert card(overview, "Failed webhooks") == "1"
    assert card(overview, "Rate-limit violations (24 h)") == "5"
    assert card(overview, "Circuit breaker") == "closed"
    assert "Demo mode" in overview
    # A duplicate is one read and no write: the server counts it, the database does not.
    assert 'webhook_events_total{outcome="duplicate"} 1.0' in metrics
