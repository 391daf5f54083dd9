"""The Stripe emulator proxy: a small HTTP server in front of localstripe.

It adds what localstripe lacks so that tests and `make run`'s demo can show
retries and the circuit breaker against something that behaves like Stripe:

- a FIFO queue of injected faults (status codes with Stripe error bodies,
  connection drops before or after forwarding, delays);
- Stripe's idempotency semantics for POSTs: replay of the stored response with
  `Idempotent-Replayed: true`, `idempotency_error` (400) when a key is reused
  with other parameters, 409 `idempotency_key_in_use` while the first request
  with that key is still running;
- a status fault can be `stored` under the request's idempotency key, as Stripe
  stores a 500: later requests with that key replay it;
- deleting a customer cancels its subscriptions first (localstripe leaves them
  active for ever);
- a record of every request (the form as the client sent it, for contract checks);
- `Request-Id` and `Stripe-Version` headers on every response;
- today's Stripe speaks of `price` where localstripe only knows `plan`: subscription
  items' `price` is renamed to `plan` on the way upstream, and `GET /v1/prices/<id>` is
  answered from `GET /v1/plans/<id>`, with the plan written as a Price;
- webhook endpoints (`/v1/webhook_endpoints`: create, list, retrieve, update, delete), which
  localstripe lacks, kept per API key as Stripe keeps them per account. An endpoint whose URL
  is on loopback is registered with localstripe (`/_config/webhooks/<id>`), so it receives
  the events it is enabled for, signed with its secret; others are listed only. A webhook
  registered with localstripe through the proxy (`POST /_config/webhooks/<id>`, as the demo
  does) is listed too, for every API key, as localstripe sends to it whatever the key.

A control API under `/_proxy/` (JSON, loopback clients only) manages faults and
recorded requests; every other path is forwarded to the upstream unchanged.
The server runs in its own thread with its own event loop, on loopback only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import json
import logging
import re
import secrets
import socket
import string
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
import stripe
import yarl
from aiohttp import web

from .loop_server import LoopbackServer
from .stripe_form import decode

log = logging.getLogger(__name__)

FAULT_KINDS = ("status", "drop_before", "drop_after", "delay")
CONTROL_PREFIX = "/_proxy/"

# Hop-by-hop and framing headers are re-made by each side; Request-Id and
# Stripe-Version are ours to set.
_SKIP_REQUEST_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                         "te", "upgrade", "proxy-connection", "accept-encoding"}
_SKIP_RESPONSE_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "connection",
                          "keep-alive", "date", "server", "request-id", "stripe-version"}

# Upstream answers that mean "rejected before the endpoint ran": Stripe stores no
# result for those, so a retry with the same key runs again.
_NOT_EXECUTED = {400, 401, 403, 429}

_PRICE_TO_PLAN_PATHS = re.compile(r"^/v1/(subscriptions|subscription_items)(/[^/]+)?$")
_ITEM_PRICE = re.compile(r"^items\[(\d+)\]\[price\]$")
_PRICE_PATH = re.compile(r"^/v1/prices/([^/]+)$")
_SECRET = re.compile(r"\b(sk|rk)_(test|live)_[A-Za-z0-9_]+")
_CUSTOMER_PATH = re.compile(r"^/v1/customers/([^/]+)$")
_ENDPOINTS_PATH = re.compile(r"^/v1/webhook_endpoints(?:/([^/]+))?$")
_CONFIG_WEBHOOK_PATH = re.compile(r"^/_config/webhooks/([^/]+)$")
_ENDED_SUBSCRIPTION = {"canceled", "incomplete_expired"}


@dataclass
class Fault:
    kind: str            # "status" | "drop_before" | "drop_after" | "delay"
    status: int = 500    # for kind="status": 500, 502, 503, 429, 402 ...
    should_retry: bool | None = None   # when not None, send header Stripe-Should-Retry: true/false
    delay: float = 0.0   # for kind="delay": sleep then forward normally
    method: str | None = None          # only requests with this method consume the fault (None: any)
    path: str | None = None            # regex matched (re.search) against the path; None: any
    error_type: str | None = None      # Stripe error type for status faults (default by status)
    stored: bool = False               # kind="status": keep it as the result of the request's idempotency key
    decline_code: str | None = None    # kind="status": a card error's decline_code (insufficient_funds...)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(FAULT_KINDS)})")
        if self.kind == "status" and not 400 <= int(self.status) <= 599:
            raise ValueError(f"a status fault needs a 4xx/5xx status, not {self.status!r}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if self.path is not None:
            re.compile(self.path)  # fail when queued, not when a request arrives
        if self.method is not None:
            self.method = self.method.upper()
        if not isinstance(self.stored, bool):
            raise ValueError(f"stored must be true or false, not {self.stored!r}")
        if self.stored and self.kind != "status":
            raise ValueError("only a status fault can be stored")
        if self.decline_code is not None and self.kind != "status":
            raise ValueError("only a status fault can carry a decline_code")

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or re.search(self.path, path) is not None)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]   # as received, with secret keys masked
    body: bytes
    form: dict                # POST: the body; GET/DELETE: the query string; decoded (a[b][0]=x)
    idempotency_key: str | None
    status: int | None        # what the client got (None when the connection was dropped)
    outcome: str              # "forwarded" | "replayed" | "fault:<kind>" | "idempotency_error" | "in_flight_conflict"
    request_id: str           # the Request-Id we added
    started_at: float         # time.time() on arrival
    duration: float           # seconds until answered (or dropped)
    fault: str | None = None          # kind of the fault this request consumed, if any
    reached_upstream: bool = False    # did localstripe execute it (True for drop_after too)


@dataclass
class _Stored:
    """One idempotency key: in flight until `response` is set."""
    fingerprint: str
    response: tuple[int, list[tuple[str, str]], bytes] | None = None
    request_id: str | None = None


def new_request_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "req_" + "".join(secrets.choice(alphabet) for _ in range(14))


def _mask(value: str) -> str:
    return _SECRET.sub(lambda m: f"{m.group(1)}_{m.group(2)}_***", value)


def _masked_headers(headers) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            value = _mask(value) if not value.lower().startswith("basic ") else "Basic ***"
        out[name] = value
    return out


def _error_body(type_: str, message: str, code: str | None = None, decline_code: str | None = None) -> bytes:
    error: dict[str, Any] = {"type": type_, "message": message}
    if code:
        error["code"] = code
    if decline_code:
        error["decline_code"] = decline_code
    return json.dumps({"error": error}).encode()


def _default_error(status: int) -> tuple[str, str | None]:
    if status == 429:
        return "rate_limit_error", "rate_limit"
    if status == 402:
        return "card_error", "card_declined"
    if status >= 500:
        return "api_error", None
    return "invalid_request_error", None


def translate_price_to_plan(method: str, path: str, body: bytes) -> bytes:
    """localstripe has no Prices: send subscription items' `price` as `plan`."""
    match = _PRICE_TO_PLAN_PATHS.match(path)
    if method != "POST" or not match or not body:
        return body
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    renamed = []
    for key, value in pairs:
        if _ITEM_PRICE.match(key):
            key = _ITEM_PRICE.sub(r"items[\1][plan]", key)
        elif key == "price" and match.group(1) == "subscription_items":
            key = "plan"
        renamed.append((key, value))
    return urlencode(renamed).encode() if renamed != pairs else body


def plan_as_price(plan: dict[str, Any]) -> dict[str, Any]:
    """A localstripe plan written as the Price Stripe would answer for it."""
    amount = plan.get("amount")
    return {
        "id": plan["id"], "object": "price", "active": plan.get("active", True),
        "billing_scheme": plan.get("billing_scheme") or "per_unit", "created": plan.get("created"),
        "currency": plan.get("currency"), "custom_unit_amount": None, "livemode": False, "lookup_key": None,
        "metadata": plan.get("metadata") or {}, "nickname": plan.get("nickname"), "product": plan.get("product"),
        "recurring": {"aggregate_usage": None, "interval": plan.get("interval"),
                      "interval_count": plan.get("interval_count") or 1, "trial_period_days": None,
                      "usage_type": plan.get("usage_type") or "licensed"},
        "tax_behavior": "unspecified", "tiers_mode": None, "transform_quantity": None, "type": "recurring",
        "unit_amount": amount, "unit_amount_decimal": None if amount is None else str(amount),
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StripeProxy(LoopbackServer):
    name = "stripe-proxy"

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0,
                 stripe_version: str | None = None) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the Stripe proxy serves loopback only, not {host!r}")
        super().__init__(host, port)
        self.upstream = upstream.rstrip("/")
        self.stripe_version = stripe_version or stripe.api_version
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []
        self._idempotency: dict[tuple[str, str], _Stored] = {}
        # account scope -> endpoint id -> the endpoint as Stripe shows it (secret included)
        self._endpoints: dict[str, dict[str, dict[str, Any]]] = {}
        # localstripe's own registrations made through us (/_config/webhooks/<id>): every key's
        self._config_endpoints: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle (start/stop come from LoopbackServer) ---------------------------

    async def _setup(self, sock: socket.socket) -> None:
        # Upstream is loopback too; a generous limit so 20+ concurrent requests never queue here.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200), timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=True)
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    # -- the Python interface ----------------------------------------------------

    def add_faults(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def clear(self) -> None:
        """Forget faults, recorded requests, idempotency keys and webhook endpoints (those
        registered with localstripe stay there: they are on loopback, where nothing may answer)."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._idempotency.clear()
            self._endpoints.clear()
            self._config_endpoints.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [dataclasses.replace(r, headers=dict(r.headers)) for r in self._requests]

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    self._faults.remove(fault)
                    return fault
        return None

    def _finish(self, rec: RecordedRequest, started: float, status: int | None, outcome: str) -> None:
        with self._lock:
            rec.status = status
            rec.outcome = rec.outcome if rec.fault else outcome
            rec.duration = time.perf_counter() - started

    # -- HTTP --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await self._control(request)
        started = time.perf_counter()
        body = await request.read()
        method = request.method.upper()
        rec = RecordedRequest(
            method=method, path=request.path, query=request.query_string,
            headers=_masked_headers(request.headers), body=body,
            form=decode(body) if method == "POST" or body else decode(request.query_string),
            idempotency_key=request.headers.get("Idempotency-Key"), status=None, outcome="forwarded",
            request_id=new_request_id(), started_at=time.time(), duration=0.0)
        with self._lock:
            self._requests.append(rec)
        try:
            return await self._process(request, rec, started)
        except BaseException:
            self._finish(rec, started, None, "error")
            raise

    async def _process(self, request: web.Request, rec: RecordedRequest, started: float) -> web.StreamResponse:
        ours = {"Request-Id": rec.request_id,
                "Stripe-Version": request.headers.get("Stripe-Version") or self.stripe_version}

        fault = self._take_fault(rec.method, rec.path)
        if fault:
            rec.fault, rec.outcome = fault.kind, f"fault:{fault.kind}"
            if fault.kind == "status":
                result = self._fault_result(fault)
                if fault.stored:
                    self._store_fault(request, rec, result, ours)
                self._finish(rec, started, fault.status, rec.outcome)
                return self._response(*result, ours)
            if fault.kind == "drop_before":
                self._finish(rec, started, None, rec.outcome)
                return self._drop(request)

        endpoints = _ENDPOINTS_PATH.match(rec.path)
        if endpoints:
            status, body = await self._webhook_endpoints(request, rec, endpoints.group(1))
            return self._answer(rec, started, status, ours, "emulated", body)

        # Stripe ignores idempotency keys on GET and DELETE.
        key = rec.idempotency_key if rec.method == "POST" else None
        scope: tuple[str, str] | None = None
        entry: _Stored | None = None
        if key:
            if len(key) > 255:
                return self._answer(rec, started, 400, ours, "idempotency_error", _error_body(
                    "invalid_request_error", "Idempotency-Key must be at most 255 characters long."))
            scope, fingerprint = _scope(request, key), _fingerprint(rec)
            with self._lock:
                stored = self._idempotency.get(scope)
                if stored is None:
                    entry = self._idempotency[scope] = _Stored(fingerprint)
            if stored is not None:
                if fault and fault.kind == "delay":
                    await asyncio.sleep(fault.delay)
                if stored.fingerprint != fingerprint:
                    return self._answer(rec, started, 400, ours, "idempotency_error", _error_body(
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were "
                        f"first used with. Try using a key other than '{key}' if you meant to execute a "
                        "different request."))
                if stored.response is None:
                    return self._answer(rec, started, 409, ours, "in_flight_conflict", _error_body(
                        "invalid_request_error",
                        "There is currently another in-progress request using this Idempotency-Key "
                        f"('{key}'): it is probably a duplicate submission still going through. "
                        "Please try again later.",
                        code="idempotency_key_in_use"))
                status, headers, data = stored.response
                replay_headers = {**ours, "Idempotency-Key": key, "Idempotent-Replayed": "true",
                                  "Original-Request": stored.request_id or ""}
                if fault and fault.kind == "drop_after":
                    self._finish(rec, started, None, rec.outcome)
                    return self._drop(request)
                self._finish(rec, started, status, "replayed")
                return self._response(status, headers, data, replay_headers)

        try:
            if fault and fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            deleted_customer = _CUSTOMER_PATH.match(rec.path) if rec.method == "DELETE" else None
            if deleted_customer:
                await self._cancel_subscriptions(request, deleted_customer.group(1))
            status, headers, data = await self._forward(request, rec)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            self._forget(scope, entry)
            return self._answer(rec, started, 502, ours, "upstream_error", _error_body(
                "api_error", f"The Stripe emulator proxy could not reach {self.upstream}: {type(exc).__name__}"))
        except BaseException:
            self._forget(scope, entry)
            raise
        rec.reached_upstream = True
        if entry is not None:
            if status in _NOT_EXECUTED:
                self._forget(scope, entry)
            else:
                entry.request_id = rec.request_id
                entry.response = (status, headers, data)
        if key:
            ours["Idempotency-Key"] = key
        if fault and fault.kind == "drop_after":
            self._finish(rec, started, None, rec.outcome)
            return self._drop(request)
        config_webhook = _CONFIG_WEBHOOK_PATH.match(rec.path) if rec.method == "POST" else None
        if config_webhook and status == 200:
            self._remember_config_webhook(config_webhook.group(1), rec.form)
        self._finish(rec, started, status, "forwarded")
        return self._response(status, headers, data, ours)

    def _remember_config_webhook(self, hook_id: str, form: Any) -> None:
        form = form if isinstance(form, dict) else {}
        events = _listed(form.get("events"))
        with self._lock:
            self._config_endpoints[hook_id] = {
                "id": f"we_config_{hook_id}", "object": "webhook_endpoint", "url": form.get("url"),
                "enabled_events": events or ["*"], "api_version": None, "status": "enabled",
                "description": f"localstripe /_config/webhooks/{hook_id}", "livemode": False,
                "created": int(time.time()), "metadata": {}, "application": None}

    async def _webhook_endpoints(self, request: web.Request, rec: RecordedRequest,
                                 endpoint_id: str | None) -> tuple[int, bytes]:
        """Stripe's webhook-endpoints API, emulated (localstripe has none)."""
        account = _scope(request, "")[0]
        form = rec.form if isinstance(rec.form, dict) else {}
        with self._lock:
            mine = self._endpoints.setdefault(account, {})
            configured = {e["id"]: e for e in self._config_endpoints.values()}
            found = (mine.get(endpoint_id) or configured.get(endpoint_id)) if endpoint_id else None
        if found is not None and found["id"] in configured and rec.method != "GET":
            return 400, _error_body("invalid_request_error",
                                    "This endpoint was registered with localstripe's /_config/webhooks: change it there.")
        if endpoint_id and found is None:
            return 404, _error_body("invalid_request_error", f"No such webhook endpoint: '{endpoint_id}'",
                                    code="resource_missing")
        if rec.method == "GET" and found is not None:
            return 200, json.dumps(_shown_endpoint(found)).encode()
        if rec.method == "GET":
            with self._lock:
                listed = sorted([*mine.values(), *configured.values()], key=lambda e: (-e["created"], e["id"]))
            body = {"object": "list", "url": "/v1/webhook_endpoints", "has_more": False,
                    "data": [_shown_endpoint(e) for e in listed]}
            return 200, json.dumps(body).encode()
        if rec.method == "DELETE" and found is not None:
            with self._lock:
                mine.pop(found["id"], None)
            await self._register_upstream(found, deleted=True)
            return 200, json.dumps({"id": found["id"], "object": "webhook_endpoint", "deleted": True}).encode()
        if rec.method != "POST":
            return 405, _error_body("invalid_request_error", f"Unrecognized request URL ({rec.method}: {rec.path})")
        events = _listed(form.get("enabled_events"))
        if found is None:
            url = form.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not events:
                return 400, _error_body("invalid_request_error", "A webhook endpoint needs a url and enabled_events.")
            found = {"id": "we_" + secrets.token_hex(12), "object": "webhook_endpoint", "url": url,
                     "enabled_events": events, "api_version": form.get("api_version") or None,
                     "status": "enabled", "description": form.get("description"), "livemode": False,
                     "created": int(time.time()), "metadata": {}, "application": None,
                     "secret": "whsec_" + secrets.token_hex(16)}
            with self._lock:
                mine[found["id"]] = found
            await self._register_upstream(found)
            return 200, json.dumps(found).encode()  # the secret is shown at creation only
        before = dict(found)
        for name in ("url", "description"):
            if isinstance(form.get(name), str):
                found[name] = form[name]
        if events:
            found["enabled_events"] = events
        if "disabled" in form:
            found["status"] = "disabled" if str(form["disabled"]).lower() == "true" else "enabled"
        if found["url"] != before["url"]:
            # Moved: the old URL hears nothing more (a new one off loopback is not registered,
            # so the registration under this id would otherwise keep the old URL).
            await self._register_upstream(before, deleted=True)
        await self._register_upstream(found)
        return 200, json.dumps(_shown_endpoint(found)).encode()

    async def _register_upstream(self, endpoint: dict[str, Any], deleted: bool = False) -> None:
        """localstripe sends events to loopback endpoints only: elsewhere nothing here should call."""
        host = yarl.URL(endpoint["url"]).host or ""
        if not _is_loopback(host):
            return
        assert self._session is not None
        events = endpoint["enabled_events"]
        silent = deleted or endpoint["status"] != "enabled"
        payload = {"url": endpoint["url"], "secret": endpoint["secret"],
                   "events": [] if silent else (None if "*" in events else events)}
        async with self._session.post(f"{self.upstream}/_config/webhooks/{endpoint['id']}", json=payload) as resp:
            if resp.status != 200:
                log.warning("registering webhook endpoint %s with localstripe: HTTP %s", endpoint["id"], resp.status)

    def _forget(self, scope: tuple[str, str] | None, entry: _Stored | None) -> None:
        if scope is None or entry is None:
            return
        with self._lock:
            if self._idempotency.get(scope) is entry:
                del self._idempotency[scope]

    def _store_fault(self, request: web.Request, rec: RecordedRequest,
                     result: tuple[int, list[tuple[str, str]], bytes], ours: dict[str, str]) -> None:
        """Keep a stored fault's answer as the first result of the request's key (a
        key that already has one keeps it, as Stripe keeps the first)."""
        key = rec.idempotency_key
        if rec.method != "POST" or not key or len(key) > 255:
            return
        with self._lock:
            self._idempotency.setdefault(_scope(request, key), _Stored(
                _fingerprint(rec), response=result, request_id=rec.request_id))
        ours["Idempotency-Key"] = key

    async def _cancel_subscriptions(self, request: web.Request, customer: str) -> None:
        """Cancel the customer's live subscriptions upstream, as Stripe does when it deletes a
        customer (localstripe sends a customer.subscription.deleted for each)."""
        assert self._session is not None
        headers = {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}
        live: list[str] = []
        seen: set[str] = set()
        params = {"customer": customer, "status": "all", "limit": "100"}
        while True:
            async with self._session.get(self.upstream + "/v1/subscriptions", params=params,
                                         headers=headers) as resp:
                if resp.status != 200:
                    return  # no such customer, or not allowed: the deletion itself answers that
                page = await resp.json()
            new = [s for s in page["data"] if s["id"] not in seen]
            seen.update(s["id"] for s in new)
            live += [s["id"] for s in new if s.get("status") not in _ENDED_SUBSCRIPTION]
            # localstripe starts over when starting_after is unknown: stop on a page seen before.
            if not page.get("has_more") or not new:
                break
            params["starting_after"] = new[-1]["id"]
        for subscription in live:
            async with self._session.delete(f"{self.upstream}/v1/subscriptions/{quote(subscription, safe='')}",
                                            headers=headers) as resp:
                if resp.status != 200:
                    log.warning("cancelling %s before deleting its customer: HTTP %s", subscription, resp.status)

    async def _forward(self, request: web.Request, rec: RecordedRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST_HEADERS]
        body = translate_price_to_plan(rec.method, rec.path, rec.body)
        raw_path = request.raw_path
        price = _PRICE_PATH.match(rec.path) if rec.method == "GET" else None
        if price:  # localstripe has no Prices: its plan of that id, written as a Price
            raw_path = "/v1/plans/" + quote(price.group(1), safe="")
        url = yarl.URL(self.upstream + raw_path, encoded=True)
        async with self._session.request(rec.method, url, headers=headers, data=body or None,
                                         allow_redirects=False) as resp:
            data = await resp.read()
            kept = [(k, v) for k, v in resp.headers.items() if k.lower() not in _SKIP_RESPONSE_HEADERS]
            if price and resp.status == 200:
                data = json.dumps(plan_as_price(json.loads(data))).encode()
            return resp.status, kept, data

    def _answer(self, rec: RecordedRequest, started: float, status: int, ours: dict[str, str],
                outcome: str, body: bytes) -> web.Response:
        self._finish(rec, started, status, outcome)
        return self._response(status, [("Content-Type", "application/json")], body, ours)

    @staticmethod
    def _response(status: int, headers: list[tuple[str, str]], body: bytes, ours: dict[str, str]) -> web.Response:
        response = web.Response(status=status, body=body)
        response.headers.popall("Content-Type", None)
        for name, value in headers:
            response.headers.add(name, value)
        for name, value in ours.items():
            response.headers[name] = value
        return response

    @staticmethod
    def _fault_result(fault: Fault) -> tuple[int, list[tuple[str, str]], bytes]:
        type_, code = _default_error(fault.status)
        if fault.error_type:
            type_ = fault.error_type
        headers = [("Content-Type", "application/json")]
        if fault.should_retry is not None:
            headers.append(("Stripe-Should-Retry", "true" if fault.should_retry else "false"))
        message = f"Injected fault: HTTP {fault.status} from the Stripe emulator proxy."
        return fault.status, headers, _error_body(type_, message, code, fault.decline_code)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the client's connection without an answer: the client sees a connection error."""
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError()

    # -- control API (/_proxy/...) -------------------------------------------------

    async def _control(self, request: web.Request) -> web.Response:
        if not request.remote or not _is_loopback(request.remote):
            return web.json_response({"error": "the proxy control API is loopback only"}, status=403)
        route = request.path[len(CONTROL_PREFIX):].rstrip("/")
        method = request.method.upper()
        if route == "faults" and method == "POST":
            try:
                payload = await request.json()
                items = payload if isinstance(payload, list) else [payload]
                faults = [Fault(**item) for item in items]
            except (ValueError, TypeError, re.error) as exc:
                return web.json_response({"error": f"bad faults: {exc}"}, status=400)
            self.add_faults(*faults)
            return web.json_response({"queued": len(faults), "pending": self.pending_faults()}, status=201)
        if route == "faults" and method == "GET":
            with self._lock:
                faults = [dataclasses.asdict(f) for f in self._faults]
            return web.json_response(faults)
        if route == "faults" and method == "DELETE":
            self.clear_faults()
            return web.json_response({"pending": 0})
        if route == "requests" and method == "GET":
            records = self.requests
            limit = request.query.get("limit")
            if limit:
                if not limit.isdigit():
                    return web.json_response({"error": "limit must be a whole number"}, status=400)
                records = records[-int(limit):] if int(limit) else []
            return web.json_response([_as_json(r) for r in records])
        if route == "requests" and method == "DELETE":
            self.clear_requests()
            return web.json_response({"recorded": 0})
        return web.json_response({"error": f"no control route {method} {request.path}"}, status=404)


def _listed(value: Any) -> list[str]:
    """A form list (`a[0]=x&a[1]=y` decodes to a list or an index-keyed dict)."""
    if isinstance(value, dict):
        return [str(v) for _, v in sorted(value.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0)]
    if isinstance(value, list):
        return [str(v) for v in value]
    return [value] if isinstance(value, str) and value else []


def _shown_endpoint(endpoint: dict[str, Any]) -> dict[str, Any]:
    """An endpoint as Stripe lists it: its signing secret is shown at creation only."""
    return {k: v for k, v in endpoint.items() if k != "secret"}


def _scope(request: web.Request, key: str) -> tuple[str, str]:
    """Idempotency keys belong to an API key (and connected account)."""
    account = request.headers.get("Authorization", "") + "|" + request.headers.get("Stripe-Account", "")
    return hashlib.sha256(account.encode()).hexdigest(), key


def _fingerprint(rec: RecordedRequest) -> str:
    return json.dumps([rec.method, rec.path, rec.form], sort_keys=True)


def _as_json(rec: RecordedRequest) -> dict[str, Any]:
    data = dataclasses.asdict(rec)
    data["body"] = _mask(rec.body.decode("utf-8", errors="replace"))
    return data
