"""The circuit breaker: unit behaviour, shared state in a real Redis, and the API while open."""

from __future__ import annotations

import threading
import uuid

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


def probe_held_out(prober, other) -> list:
    """`prober` sends the half-open probe and holds it out while `other` calls, which must be
    refused; returns what the probe answered."""
    probe_started, release = threading.Event(), threading.Event()

    def slow_ok():
        probe_started.set()
        release.wait(5)
        return "ok"

    results: list = []
    probe = threading.Thread(target=lambda: results.append(prober.call(slow_ok)))
    probe.start()
    try:
        assert probe_started.wait(5)
        with pytest.raises(CircuitOpenError):
            other.call(lambda: "not me")
    finally:
        release.set()
        probe.join(5)
    return results


def test_one_probe_after_the_timeout_success_closes():
    breaker, clock, changes = make_breaker()
    fail(breaker, 3)
    clock.now += 61
    assert breaker.current_state == HALF_OPEN
    assert probe_held_out(breaker, breaker) == ["ok"] and breaker.current_state == CLOSED
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
    health = client.get("/api/v1/payments/health", headers=headers).get_json()
    assert health["circuit_breaker"]["state"] == "open" and health["status"] == "degraded"


def shared_pair(redis_url):
    """Two workers' breakers on one Redis state, their clocks moved together."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    first, clock_a, changes = make_breaker(RedisState(redis_url, name))
    second, clock_b, _ = make_breaker(RedisState(redis_url, name))
    first.reset()

    def later(seconds: float) -> None:
        clock_a.now += seconds
        clock_b.now += seconds

    return first, second, later, changes


def test_through_redis_one_probe_is_out_for_all_workers_and_its_success_closes(redis_url):
    first, second, later, changes = shared_pair(redis_url)
    fail(first, 3)
    later(61)
    assert second.current_state == HALF_OPEN
    assert probe_held_out(first, second) == ["ok"]  # the other worker may not probe too
    assert first.current_state == CLOSED and second.current_state == CLOSED
    assert second.failures() == 0
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_through_redis_a_failed_probe_reopens_for_every_worker(redis_url):
    first, second, later, _ = shared_pair(redis_url)
    fail(first, 3)
    later(61)
    with pytest.raises(stripe.APIConnectionError):
        second.call(down)  # the probe, by the other worker
    assert first.current_state == OPEN
    later(30)
    with pytest.raises(CircuitOpenError):
        first.call(lambda: "too early")
    later(31)
    assert first.call(lambda: "probe ok") == "probe ok"
    assert second.current_state == CLOSED


def test_through_redis_a_success_clears_the_shared_failure_count(redis_url):
    first, second, _, _ = shared_pair(redis_url)
    fail(first, 2)
    assert second.failures() == 2
    assert second.call(lambda: "ok") == "ok"
    assert first.failures() == 0
    fail(first, 2)  # two more do not open it: the count started again
    assert first.current_state == CLOSED and second.current_state == CLOSED
