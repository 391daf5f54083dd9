"""Payments: a dedup hit against a bare route on the same gunicorn, and a fresh
create against a direct stripe-python call to the same localstripe."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import stripe

from bench.harness import ROOT, bench_env, gunicorn, load, report, temp_instance
from devtools.localstripe_server import LocalStripe

SECONDS = 3.0


def _api_key(env) -> str:
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "bench.bare_wsgi", "api-keys", "create", "bench"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def main() -> None:
    emulator = LocalStripe()
    stripe_url = emulator.start()
    try:
        with temp_instance() as instance:
            env = bench_env(instance, STRIPE_API_BASE=stripe_url)
            with gunicorn("bench.bare_wsgi:app", env) as port:
                headers = {"Authorization": f"Bearer {_api_key(env)}", "Content-Type": "application/json"}
                print(f"gunicorn 2 workers x 8 threads, SQLite (WAL), localstripe in this process; "
                      f"4 client processes x 8 keep-alive connections, {SECONDS:.0f} s per phase")
                bare = load(port, lambda n: ("GET", "/bench/bare", None, {}), seconds=SECONDS)
                report("bare route (baseline)", bare)
                dedup_body = json.dumps({"user_id": "bench-dedup", "email": "dedup@example.com"}).encode()
                customers = ("POST", "/api/v1/payments/customers")
                load(port, lambda n: (*customers, dedup_body, headers), seconds=0.2, processes=1, threads=1)
                dedup = load(port, lambda n: (*customers, dedup_body, headers), seconds=SECONDS,
                             ok=lambda status, body: status == 200)
                report("customer create, dedup hit", dedup, bare)

                print("fresh creates (each a Stripe call), 2 client processes x 4 connections")
                client = stripe.StripeClient("sk_test_bench", base_addresses={"api": stripe_url},
                                             max_network_retries=0)

                def direct(n: int) -> None:
                    client.v1.customers.create(params={"email": f"d{n}@example.com",
                                                       "metadata": {"kamiyo_user_id": f"direct-{n}"}})

                direct_stats = load(port, None, seconds=SECONDS, processes=2, threads=4, call=direct)
                report("direct stripe-python create", direct_stats)
                # A letter before the number: "fresh-123456-10000042" is 14 digits joined by a dash,
                # which pass Luhn one time in ten and are refused as a card number.
                run = uuid.uuid4().hex[:6]
                fresh = load(port, lambda n: (*customers, json.dumps(
                    {"user_id": f"fresh-{run}-n{n}", "email": f"f{n}@example.com"}).encode(), headers),
                    seconds=SECONDS, processes=2, threads=4, ok=lambda status, body: status == 201)
                report("customer create via our API", fresh, direct_stats)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
