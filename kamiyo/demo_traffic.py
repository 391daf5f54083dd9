"""`flask --app wsgi demo traffic`: about twenty seconds of traffic that give the demo live numbers.

Everything goes over HTTP, the way a client, Stripe and an attacker would reach the running
server: the JSON API with the demo API key, the Stripe emulator proxy's fault queue
(`/_proxy/faults`) for Stripe's failures, webhooks signed with the demo webhook secret the way
Stripe signs them, and unsigned webhook posts from another loopback address. Nothing here reads
the database or imports a feature: what the run shows is what the server did.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click

PAYMENTS = "/api/v1/payments"
WEBHOOKS = "/api/v1/webhooks/stripe"
USER_AGENT = "kamiyo-demo-traffic"
# The unsigned burst comes from here, so that the signed deliveries from 127.0.0.1 are not
# blocked with it (a blocked IP waits out the minute, valid deliveries included).
BURST_SOURCE = "127.0.0.2"
BLOCKED_WANTED = 5  # 429s the burst stops at: counted in rate_limit_violations
DECLINED_CARD = "pm_card_visa_chargeDeclined"  # the emulator's card that fails with a CardError
GOOD_CARD = "pm_card_visa"
# Stripe's timestamps are seconds since 1970; this one is 10000-01-01, a date that Python (and
# so the handler, and our columns) cannot hold: the handler raises, as it would on any
# object it cannot store, and the inbox keeps the event as failed and answers 500.
BEYOND_YEAR_9999 = 253402300800
HEALTH_POLL_SECONDS = 0.5  # well inside gunicorn's 2 s keep-alive: the pinned connection stays
MAX_BREAKER_FAILURES = 100  # a server with a larger BREAKER_FAIL_MAX is not worth waiting for
LONGEST_REQUEST_SECONDS = 60.0


class TrafficError(click.ClickException):
    """A step did not go as intended: one line, no traceback (click prints `Error: ...`)."""


class ServerDown(TrafficError):
    """Nothing listens at the URL (connection refused)."""


class _SourceUnavailable(Exception):
    """This machine has no such loopback address to send from."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def error_code(self) -> str:
        data = self.json()
        error = data.get("error") if isinstance(data, dict) else None
        return str(error.get("code")) if isinstance(error, dict) else ""

    def describe(self) -> str:
        return f"{self.status} {self.error_code}".strip()


class Clock:
    """The run's time bound: every request's timeout and every wait fits in what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def request_timeout(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise TrafficError(f"stopped after {self.seconds:g} s (--timeout) before the run was done")
        return min(left, LONGEST_REQUEST_SECONDS)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.remaining())))


class Connection:
    """One persistent HTTP/1.1 connection (keep-alive).

    gunicorn serves a kept-alive connection from the worker that accepted it, so requests on
    one connection reach one worker. That matters for the circuit breaker: without Redis each
    worker has its own, and opening, watching and closing it must all happen on the same one.
    `reconnects` counts the times the server closed the connection and it was opened again.
    """

    def __init__(self, url: str, clock: Clock, source: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise click.BadParameter(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        self._https = parts.scheme == "https"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._clock = clock
        self._source = source
        self._conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        source = (self._source, 0) if self._source else None
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self.host, self._port, timeout=timeout, source_address=source)
        else:
            conn = http.client.HTTPConnection(self.host, self._port, timeout=timeout, source_address=source)
        try:
            conn.connect()
        except ConnectionRefusedError:
            raise ServerDown(f"nothing answers at {self.url} (connection refused)") from None
        except OSError as exc:
            if source and exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL, errno.EAFNOSUPPORT):
                raise _SourceUnavailable(self._source) from None
            raise TrafficError(f"cannot connect to {self.url}: {exc.strerror or exc}") from None
        return conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        timeout = timeout or self._clock.request_timeout()
        sent_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        while True:
            reused = self._conn is not None
            if self._conn is None:
                self._conn = self._open(timeout)
            conn = self._conn
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(method, self._prefix + path, body=body, headers=sent_headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused:
                    raise TrafficError(f"{method} {self.url}{path}: the server closed the connection") from None
                # A kept-alive connection the server let go while idle: it never read this request.
                self.reconnects += 1
                continue
            except TimeoutError:
                self.close()
                raise TrafficError(f"{method} {self.url}{path}: no answer within {timeout:.0f} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TrafficError(f"{method} {self.url}{path}: {getattr(exc, 'strerror', None) or exc!r}") from None
            if response.will_close:
                self.close()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)

    def json_request(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        body = json.dumps(payload).encode() if payload is not None else None
        return self.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe sends: HMAC-SHA256 of `<t>.<body>` with the secret."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def loopback_source_for(host: str) -> str | None:
    """Another loopback address to send from, when the server is on IPv4 loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return BURST_SOURCE if address.version == 4 and address.is_loopback and host != BURST_SOURCE else None


@dataclass
class Tally:
    customers: int = 0
    customers_replayed: int = 0
    subscriptions: int = 0
    declined: int = 0
    retried_attempts: int = 0
    breaker_failures: int = 0
    breaker_refused: int = 0
    breaker_open_seconds: float | None = None
    webhooks: dict[str, int] = field(default_factory=dict)
    burst_refused: int = 0
    burst_blocked: int = 0
    burst_source: str = ""


@dataclass
class Settings:
    url: str
    proxy_url: str
    webhook_secret: str
    api_version: str
    price: str
    rate_limit: int  # the largest count of WEBHOOK_RATE_LIMIT
    timeout: float
    api_key: str = ""


class Traffic:
    def __init__(self, settings: Settings, echo: Callable[[str], None] = click.echo) -> None:
        self.s = settings
        self.clock = Clock(settings.timeout)
        self.api = Connection(settings.url, self.clock)
        self.proxy = Connection(settings.proxy_url, self.clock)
        self.tag = secrets.token_hex(3)
        self.tally = Tally()
        self._echo = echo
        self._requests = 0
        self._faults_outstanding = False

    # -- plumbing ------------------------------------------------------------------

    def say(self, step: str, text: str) -> None:
        self._echo(f"[{self.clock.elapsed():5.1f}s] {step:<13} {text}")

    def _api(self, method: str, path: str, payload: Any = None) -> Answer:
        self._requests += 1
        headers = {
            "Authorization": f"Bearer {self.s.api_key}",
            # Its log lines and stripe_calls rows carry this id: demo traffic is easy to find.
            "X-Request-ID": f"demo-traffic-{self.tag}-{self._requests:04d}",
        }
        answer = self.api.json_request(method, PAYMENTS + path, payload, headers)
        if answer.status == 401:
            raise TrafficError(
                f"{self.s.url} refused the demo API key: is it the demo started from this folder (the same instance/)?"
            )
        return answer

    def user(self, name: str) -> str:
        return f"traffic-{self.tag}-{name}"

    def customer_request(self, name: str) -> Answer:
        user = self.user(name)
        return self._api("POST", "/customers", {"user_id": user, "email": f"{user}@example.com", "name": name.title()})

    def create_customer(self, name: str) -> dict[str, Any]:
        answer = self.customer_request(name)
        if answer.status != 201:
            raise TrafficError(f"creating customer {self.user(name)} answered {answer.describe()}, not 201")
        self.tally.customers += 1
        return answer.json()

    def subscribe(self, customer: dict[str, Any], card: str) -> Answer:
        return self._api(
            "POST",
            "/subscriptions",
            {"customer_id": customer["id"], "price_id": self.s.price, "tier": "pro", "payment_method": card},
        )

    def subscribed(self, customer: dict[str, Any]) -> dict[str, Any]:
        answer = self.subscribe(customer, GOOD_CARD)
        if answer.status != 201:
            raise TrafficError(f"subscribing {customer['user_id']} answered {answer.describe()}, not 201")
        self.tally.subscriptions += 1
        return answer.json()

    def pending_faults(self) -> int:
        answer = self.proxy.request("GET", "/_proxy/faults")
        faults = answer.json()
        if answer.status != 200 or not isinstance(faults, list):
            raise TrafficError(
                f"{self.s.proxy_url} is not the Stripe emulator proxy (GET /_proxy/faults answered "
                f"{answer.status}): pass the --stripe-proxy URL that `make run` printed"
            )
        return len(faults)

    def queue_faults(self, *faults: dict[str, Any]) -> None:
        self._faults_outstanding = True
        answer = self.proxy.request("POST", "/_proxy/faults", json.dumps(list(faults)).encode())
        if answer.status != 201:
            raise TrafficError(f"the Stripe emulator proxy refused the faults: {answer.body[:200]!r}")

    def faults_used(self, step: str) -> None:
        """Every fault a step queued went to the request it was meant for."""
        left = self.pending_faults()
        if left:
            raise TrafficError(f"{step}: {left} queued Stripe faults were not used")
        self._faults_outstanding = False

    def clear_leftover_faults(self) -> None:
        """After a run that stopped half-way: no fault of ours may hit the next request."""
        if not self._faults_outstanding:
            return
        try:
            self.proxy.request("DELETE", "/_proxy/faults", timeout=5)  # even when the run's time is up
        except click.ClickException:
            return
        self._echo(f"Cleared the Stripe faults this run left queued at {self.s.proxy_url}.")

    def breaker(self) -> dict[str, Any]:
        # The breaker's detail is for a key with ops:read (the demo key is a full key).
        answer = self.api.request("GET", f"{PAYMENTS}/health", None, {"Authorization": f"Bearer {self.s.api_key}"})
        data = answer.json()
        section = data.get("circuit_breaker") if isinstance(data, dict) else None
        if not isinstance(section, dict) or "state" not in section:
            raise TrafficError(f"GET {PAYMENTS}/health answered {answer.status} without a circuit_breaker section")
        return section

    def signed_webhook(self, event: dict[str, Any], payload: bytes | None = None) -> Answer:
        body = payload if payload is not None else json.dumps(event).encode()
        signature = stripe_signature(body, self.s.webhook_secret, int(time.time()))
        return self.api.request(
            "POST", WEBHOOKS, body, {"Stripe-Signature": signature, "Content-Type": "application/json"}
        )

    def event(self, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"evt_demo_{self.tag}_{secrets.token_hex(6)}",
            "object": "event",
            "api_version": self.s.api_version,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {"object": obj},
        }

    # -- the run -------------------------------------------------------------------

    def preflight(self) -> None:
        try:
            answer = self.api.request("GET", "/health")
        except ServerDown:
            raise ServerDown(
                f"no Kamiyo server answers at {self.s.url}: start the demo with `make run` (or pass --url)"
            ) from None
        if answer.status != 200:
            raise TrafficError(f"{self.s.url}/health answered {answer.status}: the server is not healthy")
        try:
            waiting = self.pending_faults()
        except ServerDown:
            raise ServerDown(
                f"the Stripe emulator proxy does not answer at {self.s.proxy_url}: pass the --stripe-proxy "
                "URL that `make run` printed"
            ) from None
        if waiting:
            raise TrafficError(
                f"{waiting} Stripe faults are already queued at {self.s.proxy_url}: they would hit this run "
                f"(clear them: curl -X DELETE {self.s.proxy_url}/_proxy/faults)"
            )

    def run(self, api_key: Callable[[], str]) -> Tally:
        """The whole run; `api_key()` is asked for once the server is known to answer."""
        try:
            self.preflight()
            self.s.api_key = api_key()
            self._echo(
                f"Demo traffic against {self.s.url} (Stripe: the emulator proxy at {self.s.proxy_url}), "
                f"users traffic-{self.tag}-*"
            )
            made = self.customers_and_subscriptions()
            self.card_decline()
            self.retries(made["barbara"])
            self.circuit_breaker()
            self.webhooks(made)
            self.rate_limit_burst()
        finally:
            self.clear_leftover_faults()
            self.api.close()
            self.proxy.close()
        self.summary()
        return self.tally

    def customers_and_subscriptions(self) -> dict[str, dict[str, Any]]:
        made = {name: self.create_customer(name) for name in ("ada", "grace", "alan", "barbara")}
        again = self.customer_request("ada")  # the same user again: the first answer, no second customer
        if (again.status, again.headers.get("idempotent-replayed")) != (200, "true") or again.json() != made["ada"]:
            raise TrafficError(f"creating customer {self.user('ada')} again answered {again.describe()}, not 200")
        self.tally.customers_replayed += 1
        self.say("customers", "4 created (201); ada again answered 200 Idempotent-Replayed, the same customer")
        subscriptions = {name: self.subscribed(made[name]) for name in ("ada", "grace", "alan")}
        self.say("subscriptions", f"3 created on {self.s.price}, paid with {GOOD_CARD}")
        for name, sub in subscriptions.items():
            made[name]["subscription"] = sub
        return made

    def card_decline(self) -> None:
        customer = self.create_customer("mallory")
        answer = self.subscribe(customer, DECLINED_CARD)
        if answer.status != 402:
            raise TrafficError(f"a subscription paid with {DECLINED_CARD} answered {answer.describe()}, not 402")
        self.tally.declined += 1
        self.say("card decline", f"mallory's subscription with {DECLINED_CARD}: {answer.describe()}, not retried")

    def retries(self, barbara: dict[str, Any]) -> None:
        # A 503, then a 429 that Stripe says to retry: the customer is made on the third attempt,
        # all three under one idempotency key.
        self.queue_faults(
            {"kind": "status", "status": 503, "method": "POST", "path": "^/v1/customers$"},
            {"kind": "status", "status": 429, "should_retry": True, "method": "POST", "path": "^/v1/customers$"},
        )
        self.create_customer("edsger")
        self.faults_used("retries")
        self.tally.retried_attempts += 2
        self.say("retries", "edsger: Stripe answered 503, then 429; created on attempt 3 with the same key")
        # The subscription is made, but its reply is lost: the retry gets Stripe's stored
        # answer for the key (Idempotent-Replayed), and there is still one subscription.
        self.queue_faults({"kind": "drop_after", "method": "POST", "path": "^/v1/subscriptions$"})
        self.subscribed(barbara)
        self.faults_used("retries")
        self.tally.retried_attempts += 1
        self.say("retries", "barbara: subscription made, reply lost; the retry got the stored reply, one subscription")

    def circuit_breaker(self) -> None:
        """Open the breaker of one worker with failures, watch it half-open, and close it with a probe.

        All on the pinned connection, so the failures, the health readings and the probe
        reach the same worker's breaker.
        """
        user = self.user("ken")
        reconnects = self.api.reconnects
        while (state := self.breaker())["state"] != "open":
            if self.tally.breaker_failures >= MAX_BREAKER_FAILURES:
                raise TrafficError(f"the circuit breaker did not open after {MAX_BREAKER_FAILURES} failed calls")
            # One failure at a time, so that none is left queued once the breaker opens. Not
            # retried (Stripe-Should-Retry: false): each is one failed call for the breaker.
            self.queue_faults(
                {"kind": "status", "status": 503, "should_retry": False, "method": "POST", "path": "^/v1/customers$"}
            )
            answer = self.customer_request("ken")
            if answer.status != 502:
                raise TrafficError(f"a Stripe 503 for {user} answered {answer.describe()}, not 502")
            self.tally.breaker_failures += 1
        self.faults_used("circuit breaker")
        opened = time.monotonic()
        self.say("breaker", f"open after {self.tally.breaker_failures} failed Stripe calls in a row")
        refused = self.customer_request("ken")
        if refused.status != 503:
            raise TrafficError(f"with the breaker open, creating {user} answered {refused.describe()}, not 503")
        self.tally.breaker_refused += 1
        self.say("breaker", f"{user} refused without calling Stripe: {refused.describe()}; waiting to half-open")
        while state["state"] == "open":
            if self.clock.remaining() <= HEALTH_POLL_SECONDS:
                raise TrafficError(
                    f"the circuit breaker was still open after {time.monotonic() - opened:.0f} s: the server's "
                    "BREAKER_RESET_TIMEOUT is longer than this run's --timeout"
                )
            self.clock.sleep(HEALTH_POLL_SECONDS)
            state = self.breaker()
        probe = self.customer_request("ken")
        if probe.status != 201:
            raise TrafficError(f"the breaker's probe (creating {user}) answered {probe.describe()}, not 201")
        self.tally.customers += 1
        state = self.breaker()
        if state["state"] != "closed":
            raise TrafficError(f"after a successful probe the circuit breaker is {state['state']}, not closed")
        self.tally.breaker_open_seconds = time.monotonic() - opened
        moved = self.api.reconnects - reconnects
        note = f" (the connection was opened again {moved} times: another worker may have answered)" if moved else ""
        self.say(
            "breaker", f"half-open after {self.tally.breaker_open_seconds:.1f} s; the probe made {user}: closed{note}"
        )

    def webhooks(self, made: dict[str, dict[str, Any]]) -> None:
        ada = made["ada"]
        customer = {
            "id": ada["stripe_customer_id"],
            "object": "customer",
            "email": ada["email"],
            "name": ada["name"],
            "metadata": {"kamiyo_user_id": ada["user_id"]},
        }
        event = self.event("customer.updated", customer)
        payload = json.dumps(event).encode()
        answers = [self.signed_webhook(event, payload).json() for _ in range(2)]
        if answers != [{"status": "processed"}, {"status": "duplicate"}]:
            raise TrafficError(f"{event['id']} delivered twice answered {answers}, not processed then duplicate")
        self._count_webhook("processed")
        self._count_webhook("duplicate")
        self.say("webhooks", f"{event['id']} (customer.updated) delivered twice: processed, then duplicate")

        grace, sub = made["grace"], made["grace"]["subscription"]
        subscription = {
            "id": sub["stripe_subscription_id"],
            "object": "subscription",
            "customer": grace["stripe_customer_id"],
            "status": "active",
            "metadata": {"kamiyo_customer_id": str(grace["id"]), "kamiyo_tier": sub["tier"]},
            "items": {
                "object": "list",
                "data": [{"id": "si_demo", "price": {"id": sub["price_id"]}, "current_period_end": BEYOND_YEAR_9999}],
            },
        }
        broken = self.event("customer.subscription.updated", subscription)
        answer = self.signed_webhook(broken)
        if answer.status != 500 or answer.error_code != "webhook_failed":
            raise TrafficError(f"{broken['id']} answered {answer.describe()}, not 500 webhook_failed")
        self._count_webhook("failed")
        self.say(
            "webhooks",
            f"{broken['id']} (a period ending in the year 10000): the handler failed, "
            f"{answer.describe()}, stored as failed",
        )

    def _count_webhook(self, status: str) -> None:
        self.tally.webhooks[status] = self.tally.webhooks.get(status, 0) + 1

    def rate_limit_burst(self) -> None:
        source = loopback_source_for(self.api.host)
        burst = Connection(self.s.url, self.clock, source=source)
        cap = min(3 * self.s.rate_limit + 2 * BLOCKED_WANTED + 10, 2000)
        body = json.dumps({"id": f"evt_unsigned_{self.tag}", "type": "customer.created"}).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"{USER_AGENT} (unsigned burst)"}
        try:
            for _ in range(cap):
                try:
                    answer = burst.request("POST", WEBHOOKS, body, headers)
                except _SourceUnavailable:
                    burst = Connection(self.s.url, self.clock)
                    source = None
                    continue
                if answer.status == 400:
                    self.tally.burst_refused += 1
                elif answer.status == 429:
                    self.tally.burst_blocked += 1
                    if self.tally.burst_blocked >= BLOCKED_WANTED:
                        break
                else:
                    raise TrafficError(f"an unsigned webhook post answered {answer.describe()}, not 400 or 429")
            else:
                raise TrafficError(
                    f"{cap} unsigned webhook posts and fewer than {BLOCKED_WANTED} were blocked: is the server's "
                    "WEBHOOK_RATE_LIMIT higher than this folder's?"
                )
        finally:
            burst.close()
        self.tally.burst_source = source or "this machine"
        self.say(
            "rate limit",
            f"unsigned posts from {self.tally.burst_source}: {self.tally.burst_refused} refused (400), "
            f"then {self.tally.burst_blocked} blocked (429, counted in rate_limit_violations)",
        )

    def summary(self) -> None:
        t = self.tally
        webhooks = ", ".join(f"{count} {status}" for status, count in t.webhooks.items())
        lines = [
            f"Done in {self.clock.elapsed():.1f} s. Made through {self.s.url}:",
            f"  customers      {t.customers} created, {t.customers_replayed} repeat answered from the first",
            f"  subscriptions  {t.subscriptions} created, {t.declined} declined (402)",
            f"  Stripe calls   {t.retried_attempts} failed attempts retried under the same key",
            f"  breaker        opened after {t.breaker_failures} failures, refused {t.breaker_refused} request, "
            f"closed after {t.breaker_open_seconds or 0:.1f} s",
            f"  webhooks       {webhooks}",
            f"  rate limit     {t.burst_refused + t.burst_blocked} unsigned posts from {t.burst_source}: "
            f"{t.burst_refused} refused, {t.burst_blocked} blocked",
        ]
        for line in lines:
            self._echo(line)
