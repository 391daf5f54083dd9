"""Payments: a dedup hit against a bare route on the same gunicorn, and a fresh
create against a direct stripe-python call to the same localstripe."""

from __future__ import annotations

import uuid

import stripe

from bench.harness import bench_env, gunicorn, load, report, temp_instance
from devtools.localstripe_server import LocalStripe

CONCURRENCY = 32
HOT_REQUESTS = 3000
CREATE_CONCURRENCY = 8
CREATES = 400


def _api_key(env) -> str:
    import subprocess
    import sys

    from bench.harness import ROOT

    out = subprocess.run([sys.executable, "-m", "flask", "--app", "bench.bare_wsgi", "api-keys", "create", "bench"],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def main() -> None:
    emulator = LocalStripe()
    stripe_url = emulator.start()
    try:
        with temp_instance() as instance:
            env = bench_env(instance, STRIPE_API_BASE=stripe_url)
            with gunicorn("bench.bare_wsgi:app", env) as url:
                headers = {"Authorization": f"Bearer {_api_key(env)}"}
                print(f"gunicorn 2 workers, SQLite, localstripe; {CONCURRENCY} clients for hot paths")
                bare = load(lambda s, i: s.get(f"{url}/bench/bare"), HOT_REQUESTS, CONCURRENCY)
                report("bare route (baseline)", bare)
                body = {"user_id": "bench-dedup", "email": "dedup@example.com"}
                load(lambda s, i: s.post(f"{url}/api/v1/payments/customers", json=body, headers=headers), 1, 1)
                dedup = load(lambda s, i: s.post(f"{url}/api/v1/payments/customers", json=body, headers=headers),
                             HOT_REQUESTS, CONCURRENCY, expect=lambda r: r.status_code == 200)
                report("customer create, dedup hit", dedup, bare)

                print(f"fresh creates, {CREATE_CONCURRENCY} clients, {CREATES} each")
                client = stripe.StripeClient("sk_test_bench", base_addresses={"api": stripe_url},
                                             max_network_retries=0)

                def direct(session, i):
                    client.v1.customers.create(params={"email": f"d{i}@example.com",
                                                       "metadata": {"kamiyo_user_id": f"direct-{i}"}})
                    return type("Ok", (), {"ok": True})()

                direct_stats = load(direct, CREATES, CREATE_CONCURRENCY)
                report("direct stripe-python create", direct_stats)
                run = uuid.uuid4().hex[:6]
                fresh = load(lambda s, i: s.post(f"{url}/api/v1/payments/customers", headers=headers,
                                                 json={"user_id": f"fresh-{run}-{i}", "email": f"f{i}@example.com"}),
                             CREATES, CREATE_CONCURRENCY, expect=lambda r: r.status_code == 201)
                report("customer create via our API", fresh, direct_stats)
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
