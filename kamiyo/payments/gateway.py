"""The only code that talks to Stripe.

It holds a `stripe.StripeClient` built from the app's configuration (never the
module-global `stripe.api_key`), with stripe-python's own retries switched off:
our retry policy owns retries so that one idempotency key is reused on every
attempt.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import stripe
from flask import Flask, current_app

from ..models import utcnow


class StripeGateway:
    def __init__(self, config) -> None:
        self.api_version = config["STRIPE_API_VERSION"]
        self.api_base = config["STRIPE_API_BASE"]
        self._api_key = config["STRIPE_SECRET_KEY"] or ""
        self.client = self._build_client(config["STRIPE_TIMEOUT_SECONDS"])
        # A separate client with a short timeout, so a health probe never hangs.
        self._health_client = self._build_client(config["STRIPE_HEALTH_TIMEOUT_SECONDS"])
        self._health_ttl = float(config["STRIPE_HEALTH_CACHE_SECONDS"])
        self._health_lock = threading.Lock()
        self._health_cached: tuple[float, dict[str, Any]] | None = None

    def _build_client(self, timeout: float) -> stripe.StripeClient:
        return stripe.StripeClient(
            self._api_key,
            stripe_version=self.api_version,
            base_addresses={"api": self.api_base},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

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
            self._health_client.v1.customers.list(params={"limit": 1})
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
        from ..versioning.observed import record_response_version

        try:
            page = self.client.v1.webhook_endpoints.list(params={"limit": 100})
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                return None
            raise
        headers = page.last_response.headers if page.last_response else {}
        record_response_version(next((v for k, v in headers.items() if k.lower() == "stripe-version"), None))
        # Only what the check needs: never the signing secret, nor the URL's query string.
        endpoints = (e.to_dict() for e in page.auto_paging_iter())
        return [{"id": e["id"], "url": (e.get("url") or "").split("?", 1)[0],
                 "api_version": e.get("api_version"), "status": e.get("status")} for e in endpoints]


def init_app(app: Flask) -> None:
    # STRIPE_LOG / stripe.log make stripe-python print request details straight
    # to stderr, past our redaction filter; its standard logger is enough.
    stripe.log = None
    app.extensions["stripe_gateway"] = StripeGateway(app.config)


def get_gateway() -> StripeGateway:
    return current_app.extensions["stripe_gateway"]
