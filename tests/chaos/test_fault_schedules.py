"""Randomized fault schedules against several workers on one database (SQLite, PostgreSQL).

After each schedule, once the webhooks have drained, these must hold:
1. at most one live Stripe subscription per customer and price;
2. every live Stripe object carrying our metadata is in our database, or reported by reconcile;
3. our status equals Stripe's;
4. no 5xx except 502 or 503 with a support_id.

`make test` runs a bounded budget (CHAOS_SECONDS per database, seeds from 0: the same
schedules every run); `make chaos` runs thousands from a random first seed. A failing
schedule is replayed with CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import os
import time

import pytest
import stripe

from devtools.localstripe_server import LocalStripe
from tests.chaos.schedules import Run, generate, our_rows
from tests.chaos.world import CONFIG, WORKERS, Capture, World, check_invariants
from tests.support import both_databases

pytestmark = both_databases

INVARIANTS = 4


@pytest.fixture
def world(make_app, proxy, localstripe_url, serve_app, plan_id):
    client = stripe.StripeClient("sk_test_chaos", base_addresses={"api": localstripe_url}, max_network_retries=0)
    product = client.v1.products.create(params={"name": "Chaos"})
    second = client.v1.plans.create(params={"product": product.id, "amount": 900, "currency": "usd",
                                            "interval": "month"}).id
    apps = [make_app(STRIPE_API_BASE=proxy.url, **CONFIG) for _ in range(WORKERS)]
    operator = make_app(STRIPE_API_BASE=proxy.url, STRIPE_RETRY_MIN_WAIT=0.05, STRIPE_RETRY_MAX_WAIT=0.2)
    delay = LocalStripe.webhook_delay()
    LocalStripe.set_webhook_delay(0.02)
    capture = Capture(serve_app, localstripe_url)
    try:
        yield World(apps, operator, proxy, localstripe_url, capture, [plan_id, second])
    finally:
        capture.close()
        LocalStripe.set_webhook_delay(delay)


def _budget() -> tuple[list[int] | None, float]:
    """The seeds to run (None: as many as the time allows, from CHAOS_SEED_BASE), and the time."""
    if os.environ.get("CHAOS_SEED"):
        return [int(os.environ["CHAOS_SEED"])], float("inf")
    count = int(os.environ.get("CHAOS_SCHEDULES", "0"))
    base = int(os.environ.get("CHAOS_SEED_BASE", "0"))
    if count:
        return list(range(base, base + count)), float("inf")
    return None, float(os.environ.get("CHAOS_SECONDS", "20"))


def test_fault_schedules_keep_the_invariants(world, proxy, database, capsys):
    seeds, seconds = _budget()
    base = int(os.environ.get("CHAOS_SEED_BASE", "0"))
    deadline = time.monotonic() + seconds
    tried, failures = 0, []
    while (seeds is None and time.monotonic() < deadline) or (seeds is not None and tried < len(seeds)):
        seed = seeds[tried] if seeds is not None else base + tried
        proxy.clear()
        users, steps = generate(seed, world.plans)
        run = Run(world, seed, users)
        try:
            run.play(steps)
            problems = check_invariants(world, users, run.ledger)
        except Exception as exc:  # the schedule could not even finish: a finding too
            problems = [f"{type(exc).__name__}: {exc}"]
        tried += 1
        if problems:
            failures.append((seed, steps, problems, our_rows(world, users)))
        if seeds is not None and tried % 100 == 0:
            with capsys.disabled():
                print(f"chaos[{database}]: {tried} schedules, {len(failures)} failing so far", flush=True)
    with capsys.disabled():
        first = seeds[0] if seeds else base
        print(f"\nchaos[{database}]: {tried} schedules tried (seeds {first}..{first + tried - 1}), "
              f"{INVARIANTS} invariants checked after each ({tried * INVARIANTS} checks), "
              f"{len(failures)} schedules violated them", flush=True)
    assert not failures, "\n\n".join(
        f"seed {seed} (replay: CHAOS_SEED={seed} make chaos)\n  steps: " + "; ".join(map(str, steps))
        + "\n  violations:\n    " + "\n    ".join(problems) + "\n  our rows: " + repr(rows)
        for seed, steps, problems, rows in failures[:5])
