"""Fault schedules: a seeded generator of steps, and their run against a World.

A schedule is a list of steps drawn from one seed: creates, subscriptions (with or
without a card, with or without the caller's Idempotency-Key), cancels, card removal,
customer deletion on Stripe, webhook deliveries (now or later, in order or shuffled,
duplicated), faults queued in the Stripe emulator proxy, a request whose worker stalls
after one of its Stripe calls, and leases left to run out. The same seed gives the same
steps: a failing schedule is replayed with CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.models import live_subscription
from tests.chaos.world import FAULT_KINDS, FAULT_PATHS, LEASE, STALLABLE, WORKERS, Ledger, World

RETRIES = (0, 0, 1, 2)  # how often the client tries again at once (a later step may retry too)
KINDS = {"customer": 3, "subscribe": 5, "cancel": 2, "remove_card": 1, "delete_customer": 1, "deliver": 3,
         "faults": 4, "stall": 1, "expire": 1}


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}{self.args}"


def generate(seed: int, plans: list[str]) -> tuple[list[str], list[Step]]:
    """Random steps, interleaved with a few motifs: short sequences known to be where double
    charges hide (a lost reply, then a change, then a retry; a worker stalled past its lease
    while another takes over; a deletion while a create is in flight). Uniform noise alone
    would meet them once in thousands of schedules."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    users = [f"chaos-{seed}-{run}-{n}" for n in range(rng.choice([1, 2]))]
    noise = [_random_step(rng, users, plans) for _ in range(rng.randint(3, 8))]
    motifs = [rng.choice(MOTIFS)(rng, rng.choice(users), rng.choice(plans)) for _ in range(rng.randint(1, 3))]
    steps = [Step("customer", (users[0], rng.randrange(WORKERS), None, 2))]
    while noise or motifs:  # each motif keeps its own order; noise falls between and inside them
        source = rng.choice([m for m in (noise, *motifs) if m])
        steps.append(source.pop(0))
        motifs = [m for m in motifs if m]
    return users, steps


def _random_step(rng: random.Random, users: list[str], plans: list[str]) -> Step:
    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
    user, plan, worker = rng.choice(users), rng.choice(plans), rng.randrange(WORKERS)
    key = str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.4 else None
    return {
        "customer": lambda: Step("customer", (user, worker, key, rng.choice(RETRIES))),
        "subscribe": lambda: Step("subscribe", (user, plan, worker, rng.random() < 0.6, key, rng.choice(RETRIES))),
        "cancel": lambda: Step("cancel", (user, plan, worker)),
        "remove_card": lambda: Step("remove_card", (user,)),
        "delete_customer": lambda: Step("delete_customer", (user,)),
        "deliver": lambda: Step("deliver", (rng.random(), rng.random() < 0.5, rng.random() < 0.3)),
        "faults": lambda: Step("faults", (rng.choice(FAULT_KINDS), rng.choice(FAULT_PATHS), rng.choice([1, 1, 3]))),
        "stall": lambda: Step("stall", (user, plan, worker, rng.choice(STALLABLE))),
        "expire": lambda: Step("expire"),
    }[kind]()


def _lost_create_then_retry(rng: random.Random, user: str, plan: str) -> list[Step]:
    """Every reply to a create is lost; the customer changes something (removes the saved
    card, cancels, or the webhooks arrive); the client tries again, then once more with a card."""
    path = rng.choice([r"^/v1/subscriptions$", r"^/v1/subscriptions$", r"^/v1/customers$"])
    # Paid with the saved card (no card in the request): a retry must not turn into a local 402.
    first = (Step("subscribe", (user, plan, rng.randrange(WORKERS), False, None, 0))
             if "subscriptions" in path else Step("customer", (user, rng.randrange(WORKERS), None, 0)))
    change = rng.choice([Step("remove_card", (user,)), Step("remove_card", (user,)),
                         Step("cancel", (user, plan, rng.randrange(WORKERS))), Step("deliver", (1.0, True, True))])
    retry = Step("subscribe", (user, plan, rng.randrange(WORKERS), False, None, 1))
    return [Step("customer", (user, rng.randrange(WORKERS), None, 2)), Step("save_card", (user,)),
            Step("faults", (rng.choice(["drop_after", "drop_after", "delay", "stored_500"]), path, 3)), first,
            change, retry, Step("subscribe", (user, plan, rng.randrange(WORKERS), True, None, 1))]


def _stalled_past_the_lease(rng: random.Random, user: str, plan: str) -> list[Step]:
    """A worker stalls after a Stripe call; its lease runs out; another worker takes over,
    maybe the user cancels; the stalled one wakes at the end."""
    steps = [Step("customer", (user, rng.randrange(WORKERS), None, 2)),
             Step("stall", (user, plan, rng.randrange(WORKERS), rng.choice(STALLABLE))), Step("expire"),
             Step("subscribe", (user, plan, rng.randrange(WORKERS), rng.random() < 0.7, None, 1))]
    if rng.random() < 0.6:
        steps.append(Step("cancel", (user, plan, rng.randrange(WORKERS))))
    return steps


def _deleted_while_creating(rng: random.Random, user: str, plan: str) -> list[Step]:
    """The customer is deleted on Stripe while a subscription is being created."""
    return [Step("customer", (user, rng.randrange(WORKERS), None, 2)),
            Step("stall", (user, plan, rng.randrange(WORKERS), "create_subscription")),
            Step("delete_customer", (user,)), Step("deliver", (1.0, rng.random() < 0.5, rng.random() < 0.5)),
            Step("customer", (user, rng.randrange(WORKERS), None, 1))]


MOTIFS = (_lost_create_then_retry, _stalled_past_the_lease, _deleted_while_creating)


class Run:
    """One schedule's run: its steps against the world, then the drain."""

    def __init__(self, world: World, seed: int, users: list[str]) -> None:
        self.world, self.users = world, users
        self.rng = random.Random(seed ^ 0x5EED)
        self.ledger = Ledger()
        self.customers: dict[str, int] = {}  # our customer id per user
        self.stalled: list[tuple[threading.Thread, threading.Event]] = []

    def play(self, steps: list[Step]) -> None:
        try:
            for step in steps:
                getattr(self, f"_{step.kind}")(*step.args)
        finally:
            for thread, wake in self.stalled:
                wake.set()
                thread.join(30)
        self.world.drain(self.ledger)

    def _body(self, user: str) -> dict[str, str]:
        return {"user_id": user, "email": f"{user}@example.com"}

    def _customer(self, user: str, worker: int, key: str | None, retries: int) -> None:
        answer = self.world.call(self.ledger, worker, "/customers", self._body(user), key, retries)
        if answer.status_code in (200, 201):
            self.customers[user] = answer.get_json()["id"]

    def _subscription_body(self, user: str, plan: str, card: bool) -> dict[str, Any] | None:
        if user not in self.customers:
            return None
        body = {"customer_id": self.customers[user], "price_id": plan, "tier": "pro"}
        return {**body, "payment_method": "pm_card_visa"} if card else body

    def _subscribe(self, user: str, plan: str, worker: int, card: bool, key: str | None, retries: int) -> None:
        body = self._subscription_body(user, plan, card)
        if body is not None:
            self.world.call(self.ledger, worker, "/subscriptions", body, key, retries)

    def _cancel(self, user: str, plan: str, worker: int) -> None:
        if user not in self.customers:
            return
        with self.world.apps[worker].app_context():
            row = live_subscription(self.customers[user], plan)
            row_id = row.id if row is not None else None
            db.session.rollback()
        if row_id is not None:
            self.world.call(self.ledger, worker, f"/subscriptions/{row_id}/cancel", None, None, retries=2)

    def _stripe_customers(self, user: str) -> list[str]:
        listed = self.world.stripe.v1.customers.list(params={"email": f"{user}@example.com", "limit": 100})
        return [c.id for c in listed.data]

    def _save_card(self, user: str) -> None:
        """The customer saves a card at checkout: it becomes their default on Stripe."""
        for stripe_id in self._stripe_customers(user):
            self.world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
            self.world.stripe.v1.customers.update(stripe_id, params={
                "invoice_settings": {"default_payment_method": "pm_card_visa"}})

    def _remove_card(self, user: str) -> None:
        for stripe_id in self._stripe_customers(user):
            self.world.stripe.v1.customers.update(stripe_id, params={
                "invoice_settings": {"default_payment_method": ""}})

    def _delete_customer(self, user: str) -> None:
        for stripe_id in self._stripe_customers(user):
            try:
                self.world.stripe_via_proxy.v1.customers.delete(stripe_id)
            except Exception:  # a fault queued in the proxy met the deletion: it may or may not have happened
                pass

    def _deliver(self, share: float, shuffle: bool, duplicate: bool) -> None:
        self.world.capture.settle(quiet=0.03, limit=0.5)
        events = self.ledger.undelivered + self.world.capture.take()
        cut = int(len(events) * share)  # the rest arrives later, out of order with what follows
        self.ledger.undelivered = events[cut:]
        self.world.deliver(self.ledger, self.rng, events[:cut], shuffle, duplicate)

    def _faults(self, kind: str, path: str | None, count: int) -> None:
        self.world.faults(kind, path, count, self.rng)

    def _stall(self, user: str, plan: str, worker: int, after: str) -> None:
        body = self._subscription_body(user, plan, card=True)
        if body is None:
            return
        reached, wake = threading.Event(), threading.Event()

        def request() -> None:
            self.world.stalls.local.after = (after, reached, wake)
            try:
                response = self.world.client(worker).post("/api/v1/payments/subscriptions", json=body,
                                                          headers=self.world.headers)
                self.ledger.record("POST /subscriptions (stalled)", response)
            finally:
                self.world.stalls.local.after = None

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        self.stalled.append((thread, wake))
        # It may never make that call (a dedup, a refusal): then it simply finishes.
        while thread.is_alive() and not reached.wait(0.01):
            pass

    def _expire(self) -> None:
        time.sleep(LEASE + 0.05)


def our_rows(world: World, users: list[str]) -> list[tuple]:
    """Our view, for a failure report."""
    from kamiyo.models import Customer, Subscription

    with world.apps[0].app_context():
        return db.session.execute(
            select(Customer.user_id, Customer.stripe_customer_id, Subscription.stripe_subscription_id,
                   Subscription.price_id, Subscription.status, Subscription.duplicate_of)
            .outerjoin(Subscription).where(Customer.user_id.in_(users))).all()
