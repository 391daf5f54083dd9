"""The world a fault schedule runs in: several workers (apps on one database) behind the
Stripe emulator proxy, Stripe's webhooks captured for delivery in any order, a client that
retries, and the invariants checked once the schedule is over."""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import requests
import stripe
from flask import Flask, request
from sqlalchemy import select

from devtools.localstripe_server import LocalStripe
from devtools.stripe_proxy import Fault
from kamiyo.extensions import db
from kamiyo.models import LIVE_SUBSCRIPTION_STATUSES, Customer, Subscription
from kamiyo.payments.reconcile import reconcile_customers, reconcile_subscriptions
from tests.support import TEST_SECRETS
from tests.webhooks.stripe_signing import URL as WEBHOOK_URL

API = "/api/v1/payments"
WORKERS = 3
# The longest Stripe step (3 x 0.25 s + backoff) fits in the lease, as the configuration requires.
CONFIG = {"STRIPE_TIMEOUT_SECONDS": 0.25, "STRIPE_RETRY_ATTEMPTS": 3, "STRIPE_RETRY_MIN_WAIT": 0.01,
          "STRIPE_RETRY_MAX_WAIT": 0.02, "OPERATION_LEASE_SECONDS": 0.8, "IDEMPOTENCY_WAIT_SECONDS": 0.3,
          "BREAKER_FAIL_MAX": 5, "BREAKER_RESET_TIMEOUT": 0.3}
LEASE = CONFIG["OPERATION_LEASE_SECONDS"]
FAULT_KINDS = ("drop_before", "drop_after", "5xx", "stored_500", "429", "delay")
FAULT_PATHS = (r"^/v1/subscriptions$", r"^/v1/customers$", r"^/v1/payment_methods/.*/attach$", r"^/v1/customers/cus_",
               r"^/v1/subscriptions/sub_", None)
STALLABLE = ("create_customer", "attach_payment_method", "set_default_payment_method", "retrieve_customer",
             "create_subscription", "retrieve_subscription")


class Stalls:
    """A request stalls (a long pause of its worker) right after a named gateway call returns,
    when its own thread asked for it: other requests on the worker go on."""

    def __init__(self, apps: list[Flask]) -> None:
        self.local = threading.local()
        for app in apps:
            gateway = app.extensions["stripe_gateway"]
            for name in STALLABLE:
                setattr(gateway, name, self._stallable(name, getattr(gateway, name)))

    def _stallable(self, name: str, call):
        def run(*args: Any, **kwargs: Any):
            result = call(*args, **kwargs)
            wanted = getattr(self.local, "after", None)
            if wanted is not None and wanted[0] == name:
                self.local.after = None
                wanted[1].set()  # reached
                wanted[2].wait(30)  # until woken
            return result

        return run


class Capture:
    """Stripe's webhooks (localstripe signs and sends them) kept for the schedule to deliver."""

    def __init__(self, serve_app, localstripe_url: str) -> None:
        self.events: list[tuple[bytes, str]] = []
        self.lock = threading.Lock()
        receiver = Flask("chaos-capture")

        @receiver.post("/hook")
        def hook():
            with self.lock:
                self.events.append((request.get_data(), request.headers.get("Stripe-Signature", "")))
            return "ok"

        self.hook_id = f"chaos-{uuid.uuid4().hex[:8]}"
        url = serve_app(receiver) + "/hook"
        answer = requests.post(f"{localstripe_url}/_config/webhooks/{self.hook_id}",
                               data={"url": url, "secret": TEST_SECRETS["STRIPE_WEBHOOK_SECRET"]}, timeout=5)
        assert answer.status_code == 200

    def take(self) -> list[tuple[bytes, str]]:
        with self.lock:
            taken, self.events = self.events, []
        return taken

    def settle(self, quiet: float = 0.06, limit: float = 5.0) -> None:
        """Wait until localstripe has sent what it scheduled (nothing new for `quiet` seconds)."""
        deadline = time.monotonic() + limit
        count = -1
        while time.monotonic() < deadline:
            with self.lock:
                now = len(self.events)
            if now == count:
                return
            count = now
            time.sleep(quiet)

    def close(self) -> None:
        LocalStripe.unregister_webhook(self.hook_id)


@dataclass
class Answer:
    what: str
    status: int
    body: Any


@dataclass
class Ledger:
    """What the schedule saw, for the invariants and the report."""

    answers: list[Answer] = field(default_factory=list)
    undelivered: list[tuple[bytes, str]] = field(default_factory=list)
    failed_deliveries: list[tuple[bytes, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, what: str, response) -> None:
        with self.lock:
            self.answers.append(Answer(what, response.status_code, response.get_json(silent=True)))


class World:
    def __init__(self, apps: list[Flask], operator: Flask, proxy, localstripe_url: str, capture: Capture,
                 plans: list[str]) -> None:
        # `operator`: the app the checks run reconcile with, on production timeouts (the workers'
        # quarter-second ones, on this loaded machine, could fail the check rather than the code).
        self.apps, self.operator, self.proxy, self.capture, self.plans = apps, operator, proxy, capture, plans
        self.stalls = Stalls(apps)
        self.headers = _api_key(apps[0])
        self.stripe = stripe.StripeClient("sk_test_chaos", base_addresses={"api": localstripe_url},
                                          max_network_retries=0)
        # Deletions go through the proxy: it cancels the customer's subscriptions first, as Stripe does.
        self.stripe_via_proxy = stripe.StripeClient("sk_test_chaos", base_addresses={"api": proxy.url},
                                                    max_network_retries=0)

    def client(self, worker: int):
        return self.apps[worker].test_client()

    # -- the client's calls, retried as a client would --------------------------------

    def call(self, ledger: Ledger, worker: int, path: str, body: dict | None, key: str | None,
             retries: int) -> Any:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        response = None
        for attempt in range(retries + 1):
            response = self.client((worker + attempt) % WORKERS).post(f"{API}{path}", json=body, headers=headers)
            ledger.record(f"POST {path}", response)
            if response.status_code < 500 and response.status_code != 409:
                break
            time.sleep(0.02)
        return response

    def deliver(self, ledger: Ledger, rng: random.Random, events: list[tuple[bytes, str]], shuffle: bool,
                duplicate: bool) -> None:
        batch = list(events)
        if duplicate:
            batch += rng.sample(batch, k=len(batch) // 2)
        if shuffle:
            rng.shuffle(batch)
        for body, signature in batch:
            response = self.client(rng.randrange(WORKERS)).post(
                WEBHOOK_URL, data=body, headers={"Stripe-Signature": signature, "Content-Type": "application/json"})
            ledger.record("webhook", response)
            if response.status_code >= 300:
                ledger.failed_deliveries.append((body, signature))  # Stripe delivers it again

    def faults(self, kind: str, path: str | None, count: int, rng: random.Random) -> None:
        """`count` faults of one kind for the requests to `path` (a burst of 3 fails a whole
        request through its retries)."""
        make = {"drop_before": lambda: Fault("drop_before", path=path),
                "drop_after": lambda: Fault("drop_after", path=path),
                "5xx": lambda: Fault("status", rng.choice([500, 502, 503]), path=path),
                "stored_500": lambda: Fault("status", 500, stored=True, path=path),
                "429": lambda: Fault("status", 429, path=path),
                "delay": lambda: Fault("delay", delay=rng.choice([0.05, 0.4]), path=path)}[kind]
        self.proxy.add_faults(*[make() for _ in range(count)])

    # -- the end of a schedule ------------------------------------------------------------

    def drain(self, ledger: Ledger) -> None:
        """No more faults; every webhook Stripe sent is delivered, and those answered with an
        error are delivered again, as Stripe does, until each one is taken."""
        self.proxy.clear_faults()
        self.capture.settle()
        pending = ledger.undelivered + self.capture.take() + ledger.failed_deliveries
        ledger.undelivered, ledger.failed_deliveries = [], []
        for _ in range(5):
            if not pending:
                return
            ledger_round = Ledger()
            self.deliver(ledger_round, random.Random(0), pending, shuffle=False, duplicate=False)
            ledger.answers += ledger_round.answers
            self.capture.settle()
            pending = ledger_round.failed_deliveries + self.capture.take()
        raise AssertionError(f"{len(pending)} webhooks still refused after 5 redeliveries")


def _api_key(app) -> dict[str, str]:
    from kamiyo.api_keys import create_api_key

    with app.app_context():
        _, plaintext = create_api_key("chaos")
    return {"Authorization": f"Bearer {plaintext}"}


# -- the invariants -------------------------------------------------------------------------

def check_invariants(world: World, users: list[str], ledger: Ledger) -> list[str]:
    """Every broken invariant, in words (empty when all hold)."""
    app = world.operator
    problems: list[str] = []
    stripe_customers = {user: [c.to_dict() for c in world.stripe.v1.customers.list(
        params={"email": f"{user}@example.com", "limit": 100}).data] for user in users}
    live_subs: dict[str, list[dict]] = {}
    for user, found in stripe_customers.items():
        subs = [s.to_dict() for c in found
                for s in world.stripe.v1.subscriptions.list(params={"customer": c["id"], "status": "all",
                                                                    "limit": 100}).data]
        live_subs[user] = [s for s in subs if s["status"] in LIVE_SUBSCRIPTION_STATUSES]
        by_price: dict[str, list[str]] = {}
        for s in live_subs[user]:
            by_price.setdefault(_plan(s), []).append(s["id"])
        problems += [f"{user}: {len(ids)} live Stripe subscriptions to {price}: {ids}"
                     for price, ids in by_price.items() if len(ids) > 1]
    with app.app_context():
        problems += _unknown_to_us(stripe_customers, live_subs)
        problems += _status_drift(world, users)
    problems += [f"{a.what} answered {a.status}: {a.body}" for a in ledger.answers
                 if a.status >= 500 and not (a.status in (502, 503) and _support_id(a.body))]
    return problems


def _plan(subscription: dict) -> str:
    item = (subscription.get("items") or {}).get("data", [{}])[0]
    plan = item.get("plan") or item.get("price") or {}
    return plan.get("id", "") if isinstance(plan, dict) else str(plan)


def _support_id(body: Any) -> bool:
    return isinstance(body, dict) and bool((body.get("error") or {}).get("support_id"))


def _unknown_to_us(stripe_customers: dict[str, list[dict]], live_subs: dict[str, list[dict]]) -> list[str]:
    """Every live Stripe object of ours is in our database, or reconcile adopts or reports it."""
    known_customers = set(db.session.scalars(select(Customer.stripe_customer_id)))
    known_subs = set(db.session.scalars(select(Subscription.stripe_subscription_id)))
    missing_customers = [c["id"] for found in stripe_customers.values() for c in found if c["id"] not in known_customers]
    missing_subs = [s["id"] for subs in live_subs.values() for s in subs if s["id"] not in known_subs]
    if not missing_customers and not missing_subs:
        return []
    summary = reconcile_customers()
    report = reconcile_subscriptions()
    db.session.rollback()
    known_customers = set(db.session.scalars(select(Customer.stripe_customer_id)))
    known_subs = set(db.session.scalars(select(Subscription.stripe_subscription_id)))
    reported = {d["subscription"] for d in report.duplicates}
    problems = [f"Stripe subscription {sid} is neither in our database nor reported by reconcile"
                for sid in missing_subs if sid not in known_subs and sid not in reported]
    unexplained = [cid for cid in missing_customers if cid not in known_customers]
    if len(unexplained) > summary["conflicts"]:
        problems.append(f"Stripe customers {unexplained} are neither in our database nor reported by reconcile")
    return problems


def _status_drift(world: World, users: list[str]) -> list[str]:
    problems = []
    rows = db.session.execute(select(Subscription.stripe_subscription_id, Subscription.status)
                              .join(Customer).where(Customer.user_id.in_(users))).all()
    for stripe_id, status in rows:
        theirs = world.stripe.v1.subscriptions.retrieve(stripe_id).status
        if theirs != status:
            problems.append(f"subscription {stripe_id}: ours {status}, Stripe's {theirs}")
    for user, stripe_id in db.session.execute(select(Customer.user_id, Customer.stripe_customer_id)
                                              .where(Customer.user_id.in_(users))).all():
        if stripe_id is None:
            continue
        try:
            world.stripe.v1.customers.retrieve(stripe_id)
        except stripe.InvalidRequestError:
            problems.append(f"customer of {user}: linked to {stripe_id}, which Stripe deleted")
    return problems
