"""The one Redis-client factory and its timeouts (kamiyo/redis_client.py), against the real
Redis of the session: the circuit breaker's client is made by the factory, and the rate
limiter's storage gets the same timeouts through RATELIMIT_STORAGE_OPTIONS."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest
import redis
import stripe

from kamiyo.extensions import limiter
from kamiyo.stripe_gateway.breaker import CLOSED, CircuitBreaker, RedisState
from kamiyo.redis_client import REDIS_TIMEOUTS, redis_client

TIMEOUT = 0.5


@contextlib.contextmanager
def stalled_writes(redis_url):
    """The server takes no write for a while, as a stalled one would; reads still answer."""
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        yield
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()


def test_the_timeouts_are_short():
    assert dict(REDIS_TIMEOUTS) == {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}


def test_a_client_connects_with_the_timeouts(redis_url):
    client = redis_client(redis_url)
    assert client.ping() is True
    connection = client.connection_pool.get_connection()
    try:
        assert connection.socket_timeout == TIMEOUT and connection.socket_connect_timeout == TIMEOUT
    finally:
        client.connection_pool.release(connection)
    client.close()


def test_a_stalled_redis_is_waited_for_half_a_second(redis_url):
    client = redis_client(redis_url)
    client.ping()  # connected first: what is timed below is the wait for an answer
    with stalled_writes(redis_url):
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.set(f"kamiyo-test:{uuid.uuid4().hex}", "1")
        elapsed = time.monotonic() - started
    client.close()
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT * 4, elapsed  # redis-py's own default waits 5 s


def test_the_breaker_state_fails_open_after_the_short_timeout(redis_url):
    breaker = CircuitBreaker(RedisState(redis_url, f"test-{uuid.uuid4().hex}"), fail_max=1)
    assert breaker.current_state == CLOSED  # connected

    def down():
        raise stripe.APIConnectionError("network down")

    with stalled_writes(redis_url):
        started = time.monotonic()
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)  # counting the failure is a write: it times out, and is let go
        elapsed = time.monotonic() - started
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT * 4, elapsed
    assert breaker.current_state == CLOSED  # the lost count did not open it


def test_the_rate_limit_store_gets_the_same_timeouts(make_app, redis_url):
    app = make_app(RATELIMIT_STORAGE_URI=redis_url)
    assert app.config["RATELIMIT_STORAGE_OPTIONS"] == dict(REDIS_TIMEOUTS)
    with app.app_context():
        kwargs = limiter.storage.storage.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == TIMEOUT and kwargs["socket_connect_timeout"] == TIMEOUT


def test_a_timeout_set_for_the_rate_limit_store_is_kept(make_app, redis_url):
    app = make_app(RATELIMIT_STORAGE_URI=redis_url, RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 2.0})
    assert app.config["RATELIMIT_STORAGE_OPTIONS"] == {"socket_timeout": 2.0, "socket_connect_timeout": TIMEOUT}
