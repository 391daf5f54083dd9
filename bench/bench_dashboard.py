"""The dashboard on a big database: 1 million webhook events and 1 million Stripe attempts
(a third of each in the last hour: the unkind case for a 1 h or 24 h view), then the p95
render time of the overview and of each list page, as a ratio to a bare route served by
the same gunicorn in the same run.

BENCH_ROWS (default 1000000) scales the seed; BENCH_SAMPLES (default 25) the requests per page.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import ROOT, bench_env, gunicorn, temp_instance

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
SAMPLES = int(os.environ.get("BENCH_SAMPLES", "25"))
PASSWORD = "bench password, long enough"
PAGES = [
    "/dashboard/",
    "/dashboard/version",
    "/dashboard/stripe-calls",
    "/dashboard/stripe-calls?range=7d",
    "/dashboard/stripe-calls?range=1h&outcome=error",
    "/dashboard/rate-limits",
    "/dashboard/webhooks",
    "/dashboard/webhooks?range=7d&status=failed",
    "/dashboard/payments",
    "/dashboard/breaker",
    "/dashboard/jobs",
    "/dashboard/api-keys",
    "/dashboard/audit",
]
WEEK = 7 * 86400


def _moment(now: float, rng: random.Random) -> str:
    """A third in the last hour, the rest over the week: the hot hour is the unkind case."""
    ago = rng.uniform(0, 3600) if rng.random() < 1 / 3 else rng.uniform(0, WEEK)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now - ago)) + ".000000"


def seed(database: Path, rows: int) -> float:
    started = time.perf_counter()
    rng, now = random.Random(7), time.time()
    connection = sqlite3.connect(database)
    operations = ("customer.create", "subscription.create", "payment_method.attach", "customer.retrieve")
    errors = (None,) * 18 + ("APIConnectionError", "RateLimitError")

    def calls():
        for n in range(rows):
            error = rng.choice(errors)
            yield (rng.choice(operations), 1 + (n % 10 == 0), "error" if error else "success", error,
                   None if error else 200, f"req_{n}", 12.5, f"r{n % 50000}", _moment(now, rng))

    connection.executemany(
        "INSERT INTO stripe_calls (operation, attempt, outcome, error_type, http_status, stripe_request_id, "
        "duration_ms, request_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", calls())
    payload = json.dumps({"id": "evt", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}})
    types = ("invoice.paid", "customer.subscription.updated", "payment_intent.succeeded", "customer.updated")

    def events():
        for n in range(rows):
            moment = _moment(now, rng)
            yield (f"evt_bench_{n}", rng.choice(types), "2026-10-28.endive", 0, f"obj_{n % 20000}", moment, moment,
                   moment, "failed" if n % 500 == 0 else "processed", 1, payload)

    connection.executemany(
        "INSERT INTO webhook_events (event_id, type, api_version, livemode, object_id, created, received_at, "
        "processed_at, status, attempts, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", events())
    connection.executemany(
        "INSERT INTO rate_limit_violations (client_ip, user_agent, endpoint, \"limit\", occurred_at, last_at) "
        "VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (occurred_at, client_ip, endpoint, user_agent) DO UPDATE SET count = count + 1",
        ((f"203.0.113.{n % 200}", "curl/8", "/api/v1/webhooks/stripe", "30 per 1 minute", moment, moment)
         for n, moment in ((n, _moment(now, rng)) for n in range(rows // 100))))
    connection.commit()
    connection.execute("ANALYZE")
    connection.close()
    return time.perf_counter() - started


def _p95(connection: http.client.HTTPConnection, path: str, cookie: str) -> tuple[float, int]:
    times = []
    status = 0
    for _ in range(SAMPLES + 2):
        started = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        status = response.status
    times = sorted(times[2:])  # the first two warm the worker's caches
    return times[min(len(times) - 1, int(len(times) * 0.95))] * 1000, status


def _login(port: int) -> str:
    import re

    import requests

    session = requests.Session()
    page = session.get(f"http://127.0.0.1:{port}/login").text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    answer = session.post(f"http://127.0.0.1:{port}/login", allow_redirects=False,
                          data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token})
    assert answer.status_code == 302, answer.status_code
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def main() -> None:
    with temp_instance() as instance:
        env = bench_env(instance, DASHBOARD_COOKIE_SECURE="false")
        with gunicorn("bench.bare_wsgi:app", env, workers=1) as port:
            subprocess.run([sys.executable, "-m", "flask", "--app", "bench.bare_wsgi", "users", "create",
                            "bench@example.com", "--role", "admin", "--password-stdin"], input=PASSWORD + "\n",
                           cwd=ROOT, env=env, check=True, capture_output=True, text=True)
            took = seed(instance / "bench.db", ROWS)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "flask", "--app", "bench.bare_wsgi", "scheduler", "run-job",
                            "rollup-minutes"], cwd=ROOT, env={**env, "LOG_LEVEL": "ERROR"}, check=True, text=True)
            rolled = time.perf_counter() - started
            print(f"seeded {ROWS:,} Stripe attempts, {ROWS:,} webhook events and {ROWS // 100:,} violations "
                  f"(a third in the last hour) in {took:.0f} s, counted per minute in {rolled:.1f} s; SQLite, gunicorn 1 worker; "
                  f"p95 of {SAMPLES} sequential requests per page")
            cookie = _login(port)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            bare, _ = _p95(connection, "/bench/bare", "")
            print(f"  {'bare route (baseline)':<48} p95 {bare:8.1f} ms")
            for path in PAGES:
                p95, status = _p95(connection, path, cookie)
                flag = "" if status == 200 else f"  status {status}!"
                print(f"  {path:<48} p95 {p95:8.1f} ms  ratio {p95 / bare:7.1f}x{flag}", flush=True)


if __name__ == "__main__":
    main()
