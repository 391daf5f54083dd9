"""The only code that talks to Stripe.

It holds a `stripe.StripeClient` built from the app's configuration (never the
module-global `stripe.api_key`), with stripe-python's own retries switched off:
our retry policy owns retries so that one idempotency key is reused on every
attempt. Every call goes circuit breaker → retries → one attempt, and every
attempt is recorded (stripe_calls table, metrics).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import stripe
from flask import Flask, current_app, g, has_app_context, has_request_context
from sqlalchemy import insert

from ..config import stripe_step_seconds
from ..extensions import db
from ..health import register_health_check
from ..models import utcnow
from ..observability.metrics import refresh_before_scrape
from ..rollups import register_source
from . import metrics
from .breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, MemoryState, RedisState
from .errors import CircuitOpenError
from .models import StripeCall
from .retry import ERROR_LABELS, call_with_retries

if TYPE_CHECKING:
    from stripe.params import (
        CustomerCreateParams,
        CustomerUpdateParams,
        SubscriptionCreateParams,
        WebhookEndpointListParams,
    )

log = logging.getLogger(__name__)

BREAKER_GAUGE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}


def _response_meta(obj: Any) -> tuple[int | None, str | None]:
    response = getattr(obj, "last_response", None)
    if response is None:
        return None, None
    return response.code, response.request_id


def _response_version(obj: Any) -> str | None:
    """The Stripe-Version Stripe answered with (what is really in use)."""
    response = getattr(obj, "last_response", None)
    headers = response.headers if response is not None else {}
    return next((v for k, v in (headers or {}).items() if k.lower() == "stripe-version"), None)


def _error_meta(exc: Exception) -> tuple[int | None, str | None]:
    headers = getattr(exc, "headers", None) or {}
    request_id = getattr(exc, "request_id", None) or headers.get("Request-Id") or headers.get("request-id")
    return getattr(exc, "http_status", None), request_id


class StripeGateway:
    def __init__(self, config, breaker: CircuitBreaker) -> None:
        self.api_version = config["STRIPE_API_VERSION"]
        self.api_base = config["STRIPE_API_BASE"]
        self._api_key = config["STRIPE_SECRET_KEY"] or ""
        self.client = self._build_client(config["STRIPE_TIMEOUT_SECONDS"])
        # A separate client with a short timeout, so a health probe never hangs.
        self._health_client = self._build_client(config["STRIPE_HEALTH_TIMEOUT_SECONDS"])
        self._health_ttl = float(config["STRIPE_HEALTH_CACHE_SECONDS"])
        self._health_lock = threading.Lock()
        self._health_cached: tuple[float, dict[str, Any]] | None = None
        self.breaker = breaker
        self._retry: dict[str, Any] = {
            "attempts": int(config["STRIPE_RETRY_ATTEMPTS"]),
            "min_wait": float(config["STRIPE_RETRY_MIN_WAIT"]),
            "max_wait": float(config["STRIPE_RETRY_MAX_WAIT"]),
        }

    def _build_client(self, timeout: float) -> stripe.StripeClient:
        return stripe.StripeClient(
            self._api_key,
            stripe_version=self.api_version,
            base_addresses={"api": self.api_base},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    # -- the one path every Stripe request takes ---------------------------------

    def call(
        self,
        operation: str,
        func: Callable[[stripe.RequestOptions], Any],
        idempotency_key: str | None = None,
        retry: bool = True,
    ) -> Any:
        """breaker → retries → attempt; `func(options)` makes one request (tried once when not `retry`)."""
        options: stripe.RequestOptions = {"idempotency_key": idempotency_key} if idempotency_key else {}

        def attempt(number: int) -> Any:
            started = time.perf_counter()
            try:
                result = func(options)
            except stripe.StripeError as exc:
                status, request_id = _error_meta(exc)
                self._record(
                    operation, number, "error", started, idempotency_key, status, request_id, type(exc).__name__
                )
                raise
            status, request_id = _response_meta(result)
            self._record(
                operation,
                number,
                "success",
                started,
                idempotency_key,
                status,
                request_id,
                stripe_version=_response_version(result),
            )
            # Plain dicts from here on: callers need data, not stripe-python's object tree.
            return result.to_dict()

        try:
            policy = self._retry if retry else {**self._retry, "attempts": 1}
            result = self.breaker.call(lambda: call_with_retries(operation, attempt, **policy))
        except CircuitOpenError:
            self._record(operation, 0, "breaker_open", time.perf_counter(), idempotency_key)
            metrics.PAYMENT_OPERATIONS.labels(operation=operation, outcome=metrics.BREAKER_OPEN).inc()
            raise
        return result

    def _record(
        self,
        operation: str,
        attempt: int,
        outcome: str,
        started: float,
        key: str | None,
        http_status: int | None = None,
        stripe_request_id: str | None = None,
        error_type: str | None = None,
        stripe_version: str | None = None,
    ) -> None:
        duration = time.perf_counter() - started
        if outcome != "breaker_open":
            metrics.STRIPE_REQUEST_SECONDS.labels(operation=operation).observe(duration)
        row = {
            "operation": operation,
            "attempt": attempt,
            "outcome": outcome,
            "error_type": error_type,
            "http_status": http_status,
            "stripe_request_id": stripe_request_id,
            "duration_ms": round(duration * 1000, 2),
            "request_id": g.get("request_id") if has_request_context() else None,
            "idempotency_key_prefix": key[:8] if key else None,
            "created_at": utcnow(),
            "stripe_version": stripe_version[:64] if stripe_version else None,
        }
        try:
            # Own connection and transaction: the record survives the caller's rollback.
            with db.engine.begin() as connection:
                connection.execute(insert(StripeCall), row)
        except Exception as exc:  # noqa: BLE001 -- never fail a payment because its record could not be written
            log.error("could not record a Stripe attempt: %s", type(exc).__name__)

    # -- operations ---------------------------------------------------------------

    def create_customer(self, params: dict, idempotency_key: str):
        return self.call(
            "customer.create",
            lambda o: self.client.v1.customers.create(params=cast("CustomerCreateParams", params), options=o),
            idempotency_key,
        )

    def retrieve_customer(self, customer_id: str):
        return self.call("customer.retrieve", lambda o: self.client.v1.customers.retrieve(customer_id, options=o))

    def attach_payment_method(self, payment_method: str, customer_id: str, idempotency_key: str):
        return self.call(
            "payment_method.attach",
            lambda o: self.client.v1.payment_methods.attach(
                payment_method, params={"customer": customer_id}, options=o
            ),
            idempotency_key,
        )

    def set_default_payment_method(self, customer_id: str, payment_method: str, idempotency_key: str):
        params: CustomerUpdateParams = {"invoice_settings": {"default_payment_method": payment_method}}
        return self.call(
            "customer.update",
            lambda o: self.client.v1.customers.update(customer_id, params=params, options=o),
            idempotency_key,
        )

    def create_subscription(self, params: dict, idempotency_key: str):
        return self.call(
            "subscription.create",
            lambda o: self.client.v1.subscriptions.create(params=cast("SubscriptionCreateParams", params), options=o),
            idempotency_key,
        )

    def cancel_subscription(self, subscription_id: str, idempotency_key: str):
        return self.call(
            "subscription.cancel",
            lambda o: self.client.v1.subscriptions.cancel(subscription_id, options=o),
            idempotency_key,
        )

    def retrieve_price(self, price_id: str):
        return self.call("price.retrieve", lambda o: self.client.v1.prices.retrieve(price_id, options=o))

    def retrieve_subscription(self, subscription_id: str):
        return self.call(
            "subscription.retrieve", lambda o: self.client.v1.subscriptions.retrieve(subscription_id, options=o)
        )

    def retrieve(self, kind: str, object_id: str) -> dict:
        """A customer or subscription as Stripe holds it now."""
        retrieve = {"customer": self.retrieve_customer, "subscription": self.retrieve_subscription}[kind]
        return retrieve(object_id)

    def iter_subscriptions(self, customer: str | None = None, retry: bool = True) -> Iterator[dict]:
        """Every subscription (of one customer), cancelled ones included."""
        params: dict[str, Any] = {"status": "all", **({"customer": customer} if customer else {})}
        return self._iter_list("subscription.list", self.client.v1.subscriptions.list, params, retry)

    def iter_customers(self, email: str | None = None) -> Iterator[dict]:
        return self._iter_list("customer.list", self.client.v1.customers.list, {"email": email} if email else {})

    def find_customers(self, metadata_key: str, value: str, email: str) -> list[dict]:
        """Live customers whose metadata names `value`: Stripe's search, or, where search is
        missing (the local emulator answers 404), the customers with this email."""
        query = f"metadata['{metadata_key}']:'{_search_literal(value)}'"
        try:
            found = list(self._iter_search("customer.search", self.client.v1.customers.search, query))
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
            found = list(self.iter_customers(email=email))
        return [c for c in found if (c.get("metadata") or {}).get(metadata_key) == value and not c.get("deleted")]

    def _iter_search(self, operation: str, search_method, query: str) -> Iterator[dict]:
        params: dict[str, Any] = {"query": query, "limit": 100}
        while True:
            page = self.call(operation, lambda o: search_method(params=dict(params), options=o))
            yield from page["data"]
            if not page.get("has_more") or not page.get("next_page"):
                return
            params["page"] = page["next_page"]

    def _iter_list(
        self, operation: str, list_method, filters: dict[str, Any] | None = None, retry: bool = True
    ) -> Iterator[dict]:
        params: dict[str, Any] = {"limit": 100, **(filters or {})}
        while True:
            page = self.call(operation, lambda o: list_method(params=dict(params), options=o), retry=retry)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            params["starting_after"] = page["data"][-1]["id"]

    # -- health -------------------------------------------------------------------

    def reachability(self) -> dict[str, Any]:
        """Is Stripe answering? Cached for a few seconds: the health route is
        public, and must not become a way to hammer Stripe with our key."""
        with self._health_lock:
            now = time.monotonic()
            if self._health_cached and now - self._health_cached[0] < self._health_ttl:
                return self._health_cached[1]
            result = self._probe()
            self._health_cached = (time.monotonic(), result)
            return result

    def _probe(self) -> dict[str, Any]:
        started = time.perf_counter()
        result: dict[str, Any] = {"checked_at": utcnow().isoformat()}
        try:
            page = self._health_client.v1.customers.list(params={"limit": 1})
            _tell_response_version(_response_version(page))
            result.update(reachable=True, ok=True)
        except stripe.AuthenticationError:
            # Stripe answered, but refuses our key: reachable, yet not usable.
            result.update(reachable=True, ok=False, error="authentication_failed")
        except stripe.APIConnectionError:
            result.update(reachable=False, ok=False, error="unreachable")
        except stripe.StripeError as exc:
            result.update(reachable=True, ok=False, error=f"http_{exc.http_status or 'error'}")
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    def list_webhook_endpoints(self) -> list[dict[str, Any]] | None:
        """Every webhook endpoint and the API version it is pinned to (for the
        version check); None when this Stripe has no such API (localstripe: 404)."""
        try:
            endpoints = list(self._iter_list("webhook_endpoint.list", self.client.v1.webhook_endpoints.list))
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                return None
            raise
        # Only what the check needs: never the signing secret, nor the URL's query string.
        return [
            {
                "id": e["id"],
                "url": (e.get("url") or "").split("?", 1)[0],
                "api_version": e.get("api_version"),
                "status": e.get("status"),
            }
            for e in endpoints
        ]

    def read_only_probe(self) -> dict[str, Any]:
        """What a release checks before it goes live, with read-only calls only (a list of one
        customer, the webhook endpoints): whether Stripe answers and accepts the key, its `Date`
        header (our clock against Stripe's), and each webhook endpoint with the events it is
        enabled for.

        Through the health client's short timeout, outside the breaker and the attempt
        record: a check run beside the service must not open the breaker the workers share,
        nor count in the numbers the team watches."""
        started = time.perf_counter()
        result: dict[str, Any] = {"reachable": False, "ok": False, "error": None, "date": None, "endpoints": None}
        try:
            page = self._health_client.v1.customers.list(params={"limit": 1})
            result.update(reachable=True, ok=True, date=_response_header(page, "date"))
        except stripe.AuthenticationError:
            result.update(reachable=True, error="authentication_failed")
        except stripe.APIConnectionError:
            result.update(error="unreachable")
        except stripe.StripeError as exc:
            headers = getattr(exc, "headers", None) or {}
            date = next((v for k, v in headers.items() if k.lower() == "date"), None)
            result.update(reachable=True, error=f"http_{exc.http_status or 'error'}", date=date)
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        if result["ok"]:
            try:
                result["endpoints"] = self._endpoints_unrecorded()
            except stripe.StripeError as exc:
                if getattr(exc, "http_status", None) != 404:
                    result["endpoints_error"] = type(exc).__name__
        return result

    def _endpoints_unrecorded(self) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 100}
        found: list[dict[str, Any]] = []
        while True:
            page = self._health_client.v1.webhook_endpoints.list(
                params=cast("WebhookEndpointListParams", dict(params))
            ).to_dict()
            found += page["data"]
            if not page.get("has_more") or not page["data"]:
                break
            params["starting_after"] = page["data"][-1]["id"]
        # Never the signing secret, nor the URL's query string.
        return [
            {
                "id": e["id"],
                "url": (e.get("url") or "").split("?", 1)[0],
                "api_version": e.get("api_version"),
                "status": e.get("status"),
                "enabled_events": list(e.get("enabled_events") or []),
            }
            for e in found
        ]


def _response_header(obj: Any, name: str) -> str | None:
    response = getattr(obj, "last_response", None)
    headers = response.headers if response is not None else {}
    return next((v for k, v in (headers or {}).items() if k.lower() == name), None)


def _search_literal(value: str) -> str:
    """A value inside a Stripe search query's quotes (our user ids hold no quote, but escape anyway)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _breaker_changed(breaker: CircuitBreaker, shared: bool, old: str, new: str) -> None:
    metrics.BREAKER_STATE.set(BREAKER_GAUGE[new])
    level = logging.CRITICAL if new == OPEN else logging.WARNING
    log.log(level, "circuit breaker %s -> %s", old, new, extra={"breaker_from": old, "breaker_to": new})
    if new not in (OPEN, CLOSED) or not has_app_context() or not breaker.claim_alert(new):
        return
    from ..observability.alerts import send_alert

    whose = "The breaker, shared by every worker," if shared else f"This worker's breaker (pid {os.getpid()})"
    fields: dict[str, object] = {"breaker_store": "redis" if shared else "memory", "pid": os.getpid()}
    if new == OPEN:
        send_alert(
            "payment_circuit_breaker_opened",
            f"{whose} opened: Stripe calls failed repeatedly; payments answer 503 until a probe succeeds.",
            fields=fields,
        )
    else:
        send_alert(
            "payment_circuit_breaker_closed",
            f"{whose} closed (a probe reached Stripe, or someone reset it): payments go to Stripe again.",
            severity="info",
            fields=fields,
        )


def _longest_call_seconds(config) -> float:
    """How long one call through the retries can take: the half-open probe's lease."""
    return stripe_step_seconds(config) + 5


def build_breaker(config) -> CircuitBreaker:
    redis_url = config.get("REDIS_URL")
    state = RedisState(redis_url, "stripe") if redis_url else MemoryState()
    breaker = CircuitBreaker(
        state,
        fail_max=int(config["BREAKER_FAIL_MAX"]),
        reset_timeout=float(config["BREAKER_RESET_TIMEOUT"]),
        probe_lease=_longest_call_seconds(config),
        on_change=lambda old, new: _breaker_changed(breaker, bool(redis_url), old, new),
    )
    return breaker


RESPONSE_LISTENERS = "stripe_gateway_response_listeners"


def on_response_version(app: Flask, listener: Callable[[str | None], None]) -> None:
    """Call `listener` with the Stripe-Version header of each health probe's answer."""
    app.extensions.setdefault(RESPONSE_LISTENERS, []).append(listener)


def _tell_response_version(version: str | None) -> None:
    if has_app_context():
        for listener in current_app.extensions.get(RESPONSE_LISTENERS, []):
            listener(version)


def init_app(app: Flask) -> None:
    # STRIPE_LOG / stripe.log make stripe-python print request details straight
    # to stderr, past our redaction filter; its standard logger is enough.
    stripe.log = None
    gateway = app.extensions["stripe_gateway"] = StripeGateway(app.config, build_breaker(app.config))
    metrics.init_retry_series(ERROR_LABELS.values())
    refresh_before_scrape(app, lambda: metrics.BREAKER_STATE.set(BREAKER_GAUGE[gateway.breaker.current_state]))
    shared = bool(app.config.get("REDIS_URL"))
    # Without Redis each gunicorn worker has its own breaker, and answers alternate between
    # their states: every answer says whose it is.
    register_health_check(
        app,
        "worker",
        lambda: {
            "ok": True,
            "pid": os.getpid(),
            "breaker_store": "redis" if shared else "memory",
            "breaker_shared": shared,
        },
    )
    from .queries import rollup_source

    register_source(app, rollup_source())  # per-minute counts of attempts for the dashboard


def get_gateway() -> StripeGateway:
    return current_app.extensions["stripe_gateway"]
