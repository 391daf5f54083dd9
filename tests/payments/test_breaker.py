"""The circuit breaker: unit behaviour, shared state in a real Redis, and the API while open."""

from __future__ import annotations

import threading

import pytest
import stripe
from sqlalchemy import select

from tests.support import FAST_RETRIES, closed_port_url, make_key
from kamiyo.extensions import db
from kamiyo.stripe_gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, MemoryState, RedisState
from kamiyo.stripe_gateway.errors import CircuitOpenError
from kamiyo.stripe_gateway.models import StripeCall


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def down():
    raise stripe.APIConnectionError("network down")


def declined():
    raise stripe.CardError("declined", "number", "card_declined", http_status=402)


def fail(breaker, times: int) -> None:
    """`times` consecutive calls that fail transiently."""
    for _ in range(times):
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)


def make_breaker(state=None, **kw):
    clock = Clock()
    changes = []
    breaker = CircuitBreaker(state or MemoryState(), fail_max=3, reset_timeout=60, probe_lease=30,
                             on_change=lambda old, new: changes.append((old, new)), clock=clock, **kw)
    return breaker, clock, changes


def test_opens_after_consecutive_transient_failures_and_fails_fast():
    breaker, clock, changes = make_breaker()
    fail(breaker, 3)
    assert breaker.current_state == OPEN and changes == [(CLOSED, OPEN)]
    calls = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: calls.append(1))
    assert calls == []


def test_card_and_request_errors_never_trip_it_and_reset_the_count():
    breaker, _, _ = make_breaker()
    for _ in range(2):
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)
    for _ in range(5):
        with pytest.raises(stripe.CardError):
            breaker.call(declined)
    assert breaker.current_state == CLOSED and breaker.failures() == 0


def test_one_probe_after_the_timeout_success_closes():
    breaker, clock, changes = make_breaker()
    fail(breaker, 3)
    clock.now += 61
    assert breaker.current_state == HALF_OPEN
    probe_started, release = threading.Event(), threading.Event()

    def slow_ok():
        probe_started.set()
        release.wait(5)
        return "ok"

    results = []
    probe = threading.Thread(target=lambda: results.append(breaker.call(slow_ok)))
    probe.start()
    probe_started.wait(5)
    with pytest.raises(CircuitOpenError):  # a second caller while the probe is out
        breaker.call(lambda: "not me")
    release.set()
    probe.join(5)
    assert results == ["ok"] and breaker.current_state == CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_failed_probe_reopens_for_another_timeout():
    breaker, clock, changes = make_breaker()
    fail(breaker, 3)
    clock.now += 61
    with pytest.raises(stripe.APIConnectionError):
        breaker.call(down)
    assert breaker.current_state == OPEN and changes[-1] == (HALF_OPEN, OPEN)
    clock.now += 30
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: "too early")


def test_state_is_shared_through_redis(redis_url):
    name = "test-shared"
    worker_a, clock_a, _ = make_breaker(RedisState(redis_url, name))
    worker_b, clock_b, _ = make_breaker(RedisState(redis_url, name))
    worker_a.reset()
    fail(worker_a, 2)
    with pytest.raises(stripe.APIConnectionError):
        worker_b.call(down)  # the third consecutive failure, seen by another worker
    assert worker_a.current_state == OPEN and worker_b.current_state == OPEN
    with pytest.raises(CircuitOpenError):
        worker_a.call(lambda: "blocked")
    worker_a.reset()


def test_unreachable_redis_fails_open():
    breaker, _, _ = make_breaker(RedisState(closed_port_url().replace("http", "redis") + "/0", "x"))
    assert breaker.call(lambda: "still served") == "still served"
    assert breaker.current_state == CLOSED


def test_api_answers_503_without_calling_stripe_while_open(make_app):
    app = make_app(STRIPE_API_BASE=closed_port_url(), BREAKER_FAIL_MAX=2, **FAST_RETRIES)
    headers = make_key(app)
    client = app.test_client()
    body = {"user_id": "breaker-user", "email": "b@example.com"}
    for _ in range(2):
        response = client.post("/api/v1/payments/customers", json=body, headers=headers)
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "payment_service_unreachable"
    with app.app_context():
        attempts_before = db.session.scalar(select(db.func.count()).select_from(StripeCall))
    assert attempts_before == 6  # 2 requests x 3 attempts

    blocked = client.post("/api/v1/payments/customers", json=body, headers=headers)
    assert blocked.status_code == 503
    assert blocked.get_json()["error"]["code"] == "payment_service_unavailable"
    with app.app_context():
        calls = db.session.scalars(select(StripeCall).order_by(StripeCall.id)).all()
    assert len(calls) == 7 and calls[-1].outcome == "breaker_open" and calls[-1].attempt == 0
    health = client.get("/api/v1/payments/health").get_json()
    assert health["circuit_breaker"]["state"] == "open" and health["status"] == "degraded"
