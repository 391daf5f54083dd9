"""What the circuit breaker tells the API's callers and the team: Retry-After on its 503, a
closed alert after an opened one, and in the payments health answer which worker spoke and
whether the breaker it reports is shared."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest
import requests
import stripe
import time_machine

from kamiyo.stripe_gateway.breaker import CircuitBreaker, MemoryState
from kamiyo.stripe_gateway.errors import CircuitOpenError
from tests.support import FAST_RETRIES, closed_port_url, gunicorn, make_key

CUSTOMER = {"user_id": "breaker-user", "email": "b@example.com"}
OPENED_AT = dt.datetime(2026, 12, 1, 10, 0, 0, tzinfo=dt.timezone.utc)


def test_the_503_while_open_says_when_the_probe_goes(make_app):
    app = make_app(STRIPE_API_BASE=closed_port_url(), BREAKER_FAIL_MAX=1, BREAKER_RESET_TIMEOUT=30, **FAST_RETRIES)
    headers = make_key(app)
    client = app.test_client()
    with time_machine.travel(OPENED_AT, tick=False) as clock:
        failed = client.post("/api/v1/payments/customers", json=CUSTOMER, headers=headers)
        assert failed.status_code == 503 and failed.get_json()["error"]["code"] == "payment_service_unreachable"
        assert "Retry-After" not in failed.headers  # Stripe failed; the breaker had not refused yet

        blocked = client.post("/api/v1/payments/customers", json=CUSTOMER, headers=headers)
        assert blocked.status_code == 503 and blocked.get_json()["error"]["code"] == "payment_service_unavailable"
        assert blocked.headers["Retry-After"] == "30"

        clock.shift(12.4)
        later = client.post("/api/v1/payments/customers", json=CUSTOMER, headers=headers)
        assert later.headers["Retry-After"] == "18"  # 17.6 s left, rounded up: never too early

        clock.shift(17.5)
        last = client.post("/api/v1/payments/customers", json=CUSTOMER, headers=headers)
        assert last.headers["Retry-After"] == "1"  # 0.1 s left: at least one second


def test_while_the_probe_is_out_callers_are_asked_back_in_a_second():
    now = [1000.0]
    breaker = CircuitBreaker(MemoryState(), fail_max=1, reset_timeout=60, probe_lease=30, clock=lambda: now[0])

    def down():
        raise stripe.APIConnectionError("network down")

    with pytest.raises(stripe.APIConnectionError):
        breaker.call(down)
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(down)
    assert refused.value.retry_after == 60.0
    now[0] += 60
    probing, release = threading.Event(), threading.Event()

    def slow_probe():
        probing.set()
        release.wait(5)

    probe = threading.Thread(target=breaker.call, args=(slow_probe,))
    probe.start()
    probing.wait(5)
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(down)
    release.set()
    probe.join(5)
    assert refused.value.retry_after == 1.0


def alert_titles(caplog) -> list[str]:
    return [r.getMessage().split(":", 1)[0] for r in caplog.records if r.name == "kamiyo.alerts"]


def down():
    raise stripe.APIConnectionError("network down")


def test_a_closed_alert_follows_the_opened_one(make_app, caplog):
    app = make_app(BREAKER_FAIL_MAX=1, BREAKER_RESET_TIMEOUT=30)
    breaker = app.extensions["stripe_gateway"].breaker
    caplog.set_level("INFO", logger="kamiyo.alerts")
    with time_machine.travel(OPENED_AT, tick=False) as clock, app.app_context():
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)  # opens
        with pytest.raises(CircuitOpenError):
            breaker.call(down)
        clock.shift(30)
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)  # the probe fails: open again, the same outage
        clock.shift(30)
        assert breaker.call(lambda: "answered") == "answered"  # the probe succeeds: closed
        breaker.reset(by="ops@example.com")  # closed already: nothing to tell
    assert alert_titles(caplog) == ["ALERT payment_circuit_breaker_opened", "ALERT payment_circuit_breaker_closed"]
    closed = [r for r in caplog.records if r.name == "kamiyo.alerts"][-1]
    assert (closed.levelname, closed.breaker_store) == ("INFO", "memory")


def test_a_reset_on_the_dashboard_closes_with_an_alert_too(make_app, caplog):
    app = make_app(BREAKER_FAIL_MAX=1)
    breaker = app.extensions["stripe_gateway"].breaker
    with app.app_context():
        with pytest.raises(stripe.APIConnectionError):
            breaker.call(down)
        breaker.reset(by="ops@example.com")
    assert alert_titles(caplog) == ["ALERT payment_circuit_breaker_opened", "ALERT payment_circuit_breaker_closed"]


def test_shared_through_redis_each_alert_goes_out_once_whichever_worker_moves_it(make_app, redis_url, caplog):
    import redis

    redis.Redis.from_url(redis_url).delete(*[f"kamiyo:breaker:stripe:{key}" for key in
                                            ("failures", "opened_at", "probe", "alerted")])
    first, second = (make_app(REDIS_URL=redis_url, BREAKER_FAIL_MAX=2, BREAKER_RESET_TIMEOUT=30) for _ in range(2))
    caplog.set_level("INFO", logger="kamiyo.alerts")
    with time_machine.travel(OPENED_AT, tick=False) as clock:
        for app in (first, second):  # one failure each: the shared count opens it
            with app.app_context(), pytest.raises(stripe.APIConnectionError):
                app.extensions["stripe_gateway"].breaker.call(down)
        clock.shift(30)
        with second.app_context():
            assert second.extensions["stripe_gateway"].breaker.call(lambda: "answered") == "answered"
        with first.app_context():
            first.extensions["stripe_gateway"].breaker.reset(by="ops@example.com")  # closed already
    assert alert_titles(caplog) == ["ALERT payment_circuit_breaker_opened", "ALERT payment_circuit_breaker_closed"]
    assert [r.breaker_store for r in caplog.records if r.name == "kamiyo.alerts"] == ["redis", "redis"]


def test_the_payments_health_names_its_worker_and_whether_the_breaker_is_shared(make_app, redis_url):
    app = make_app()
    key = make_key(app)
    alone = app.test_client().get("/api/v1/payments/health", headers=key).get_json()["worker"]
    assert alone == {"ok": True, "pid": os.getpid(), "breaker_store": "memory", "breaker_shared": False}
    shared = make_app(REDIS_URL=redis_url).test_client().get("/api/v1/payments/health", headers=key)
    shared = shared.get_json()["worker"]
    assert shared == {"ok": True, "pid": os.getpid(), "breaker_store": "redis", "breaker_shared": True}


def test_under_gunicorn_each_answer_says_which_worker_gave_it(isolated_environment, database_uri, make_app):
    """Without Redis two workers may report two breaker states: the answer says whose it is."""
    key = make_key(make_app())  # the detail needs a key with ops:read; this database is gunicorn's
    seen = set()
    with gunicorn(isolated_environment, database_uri, STRIPE_API_BASE=closed_port_url()) as url:
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            # A new connection each time, so that either worker may take it.
            worker = requests.get(url + "/api/v1/payments/health", headers=key, timeout=5).json()["worker"]
            assert (worker["breaker_store"], worker["breaker_shared"]) == ("memory", False)
            seen.add(worker["pid"])
    assert len(seen) == 2 and os.getpid() not in seen
