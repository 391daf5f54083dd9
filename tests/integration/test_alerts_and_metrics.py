"""The alerts module and GET /metrics."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import time_machine
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from tests.support import both_databases, closed_port_url, gunicorn, logged, wait_until
from tests.webhooks.stripe_signing import URL, customer, make_event, post, signed
from kamiyo.observability.alerts import send_alert
from kamiyo.webhooks import handlers

ROOT = Path(__file__).resolve().parents[2]

ALERT_TEST_COUNTER = Counter("kamiyo_test_alerts_metric_total", "A counter only the tests increment")


@both_databases
def test_alert_is_logged_posted_and_deduplicated_per_key_and_hour(make_app, slack, caplog):
    url, received = slack
    app = make_app(ALERT_WEBHOOK_URL=url)
    # Mid-hour: the three alerts fall in one de-duplication hour.
    with time_machine.travel(dt.datetime(2026, 12, 10, 12, 30, tzinfo=dt.UTC), tick=True), app.app_context(), \
            caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        assert send_alert("Rate limit", "203.0.113.9 sent 150 bad webhooks (sk_test_abcdefgh123)",
                          dedup_key="rate-limit:203.0.113.9", fields={"client_ip": "203.0.113.9"})
        assert not send_alert("Rate limit", "again", dedup_key="rate-limit:203.0.113.9")
        assert send_alert("Rate limit", "another ip", dedup_key="rate-limit:198.51.100.1", severity="warning")
    wait_until(lambda: len(received) == 2)  # posted off the caller's thread
    critical = next(r for r in received if r["text"] == "[CRITICAL] Rate limit")
    assert {r["text"] for r in received} == {"[CRITICAL] Rate limit", "[WARNING] Rate limit"}
    assert "sk_test_abcdefgh123" not in json.dumps(received)
    assert critical["attachments"][0]["fields"] == [{"title": "client_ip", "value": "203.0.113.9", "short": True}]
    levels = [r.levelno for r in caplog.records if r.name == "kamiyo.alerts"]
    assert levels == [logging.CRITICAL, logging.WARNING]


def test_alert_delivery_failure_is_logged_not_raised(make_app, caplog):
    app = make_app(ALERT_WEBHOOK_URL=closed_port_url() + "/hook")
    with app.app_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        assert send_alert("Version", "critical", severity="critical")

        def messages():
            found = [r.getMessage() for r in caplog.records if r.name == "kamiyo.alerts"]
            return found if len(found) == 2 else None

        assert wait_until(messages) == ["ALERT Version: critical", "alert delivery failed: ConnectionError"]


def test_metrics_endpoint_serves_prometheus_text(client):
    before = ALERT_TEST_COUNTER._value.get()
    ALERT_TEST_COUNTER.inc()
    response = client.get("/metrics")
    assert response.status_code == 200
    # One charset: Flask adds its own to a mimetype, and the constant already carries one.
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert f"kamiyo_test_alerts_metric_total {before + 1}" in response.get_data(as_text=True)


def test_metrics_token(make_app):
    client = make_app(METRICS_TOKEN="scrape-secret").test_client()
    denied = client.get("/metrics")
    assert denied.status_code == 401 and denied.get_json()["error"]["code"] == "unauthorized"
    assert denied.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    wrong = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-secret"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "bearer scrape-secret"}).status_code == 200


def test_redis_fixture_is_a_real_server(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.ping() is True
    client.set("kamiyo-test", "1")
    assert client.get("kamiyo-test") == b"1"


def samples(text: str) -> dict[str, float]:
    """Every sample of a /metrics answer, keyed `name{label="value",...}` with the labels sorted."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def series_of(found: dict[str, float], name: str) -> dict[str, float]:
    return {key: value for key, value in found.items() if key.startswith(name + "{")}


# A process of its own: in this one, other tests have counted events already.
SCRAPE_A_FRESH_APP = """
import json, sys
from kamiyo import create_app
app = create_app(json.loads(sys.argv[1]))
sys.stdout.write(app.test_client().get("/metrics").get_data(as_text=True))
"""


def test_labelled_series_exist_at_zero_before_the_first_event(app_config):
    config = {**app_config, "STRIPE_API_VERSION": "2020-08-27"}  # critical, on any clock the suite runs on
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run([sys.executable, "-c", SCRAPE_A_FRESH_APP, json.dumps(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout)

    assert series_of(found, "stripe_api_retry_total") == {
        'stripe_api_retry_total{error_type="network"}': 0.0,
        'stripe_api_retry_total{error_type="rate_limit"}': 0.0,
        'stripe_api_retry_total{error_type="api_error"}': 0.0,
    }
    assert series_of(found, "payment_operations_total") == {
        **{f'payment_operations_total{{operation="{operation}",outcome="{outcome}"}}': 0.0
           for operation in ("customer.create", "subscription.create")
           for outcome in ("created", "existing", "superseded", "transient_error", "failed", "breaker_open")},
        'payment_operations_total{operation="subscription.cancel",outcome="canceled"}': 0.0,
        'payment_operations_total{operation="subscription.cancel",outcome="existing"}': 0.0,
        'payment_operations_total{operation="subscription.cancel",outcome="breaker_open"}': 0.0,
    }
    assert series_of(found, "webhook_events_total") == {
        'webhook_events_total{outcome="processed"}': 0.0,
        'webhook_events_total{outcome="ignored"}': 0.0,
        'webhook_events_total{outcome="failed"}': 0.0,
        'webhook_events_total{outcome="duplicate"}': 0.0,
    }
    assert series_of(found, "stripe_api_version_status") == {
        'stripe_api_version_status{status="healthy"}': 0.0,
        'stripe_api_version_status{status="warning"}': 0.0,
        'stripe_api_version_status{status="critical"}': 1.0,
        'stripe_api_version_status{status="unknown"}': 0.0,
    }
    # What the alert rules read (deploy/prometheus/alerts.yml), there from the start too.
    assert found["stripe_api_version_age_days"] > 365
    assert found["payment_circuit_breaker_state"] == 0.0
    assert found["webhook_rate_limit_violations_total"] == 0.0
    assert found["duplicate_subscriptions_detected_total"] == 0.0


def test_metrics_count_each_webhook_outcome(app, client, monkeypatch):
    def outcomes() -> dict[str, float]:
        return series_of(samples(client.get("/metrics").get_data(as_text=True)), "webhook_events_total")

    before = outcomes()
    event = make_event("customer.created", customer("cus_metrics", user_id="user-metrics"))
    assert post(client, event).get_json() == {"status": "processed"}
    assert post(client, event).get_json() == {"status": "duplicate"}
    assert post(client, event).get_json() == {"status": "duplicate"}
    assert post(client, make_event("balance.available", {"id": "bal_1"})).get_json() == {"status": "ignored"}
    monkeypatch.setitem(handlers.HANDLERS, "customer.created", lambda e: 1 / 0)
    assert post(client, make_event("customer.created", customer("cus_metrics_2"))).status_code == 500

    after = outcomes()
    assert {key: after[key] - before[key] for key in after} == {
        'webhook_events_total{outcome="processed"}': 1.0,
        'webhook_events_total{outcome="duplicate"}': 2.0,
        'webhook_events_total{outcome="ignored"}': 1.0,
        'webhook_events_total{outcome="failed"}': 1.0,
    }


@pytest.mark.slow
def test_two_gunicorn_workers_answer_with_their_sum(isolated_environment, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR (make run sets it): whichever worker is scraped answers for both."""
    instance = isolated_environment
    samples_dir = tmp_path / "prometheus-multiproc"
    samples_dir.mkdir()

    def pids(**match) -> set[int]:
        return {line["process"] for line in logged(instance) if match.items() <= line.items()}

    def scrape() -> dict[str, float]:
        response = requests.get(url + "/metrics", headers={"Connection": "close"}, timeout=10)
        assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        return samples(response.text)

    with gunicorn(instance, f"sqlite:///{instance}/kamiyo.db", PROMETHEUS_MULTIPROC_DIR=str(samples_dir),
                  STRIPE_API_VERSION="2020-08-27", LOG_LEVEL="INFO") as url:
        # Both workers booted: a scrape while one still creates its sample files can fail.
        wait_until(lambda: len(pids(message="kamiyo configured")) == 2, timeout=30)
        before = scrape()
        assert series_of(before, "webhook_events_total") == {
            'webhook_events_total{outcome="processed"}': 0.0,
            'webhook_events_total{outcome="ignored"}': 0.0,
            'webhook_events_total{outcome="failed"}': 0.0,
            'webhook_events_total{outcome="duplicate"}': 0.0,
        }
        assert series_of(before, "stripe_api_retry_total") == {
            'stripe_api_retry_total{error_type="network"}': 0.0,
            'stripe_api_retry_total{error_type="rate_limit"}': 0.0,
            'stripe_api_retry_total{error_type="api_error"}': 0.0,
        }
        assert before['payment_operations_total{operation="subscription.create",outcome="created"}'] == 0.0
        # A gauge is not summed: each worker set it at start, the latest value is the answer.
        assert series_of(before, "stripe_api_version_status") == {
            'stripe_api_version_status{status="healthy"}': 0.0,
            'stripe_api_version_status{status="warning"}': 0.0,
            'stripe_api_version_status{status="critical"}': 1.0,
            'stripe_api_version_status{status="unknown"}': 0.0,
        }

        sent = 0
        while len(pids(path=URL)) < 2:  # a new connection each: until both workers took deliveries
            assert sent < 100, "one worker took every delivery"
            event = make_event("customer.created", customer(f"cus_mp_{sent}", user_id=f"user-mp-{sent}"))
            for expected in ("processed", "duplicate"):
                body, headers = signed(event)
                answer = requests.post(url + URL, data=body, headers={**headers, "Connection": "close"}, timeout=10)
                assert answer.json() == {"status": expected}
            sent += 1

        scrapes = 0
        while len(pids(path="/metrics")) < 2:  # the same sum, whichever worker answers the scrape
            assert scrapes < 100, "one worker answered every scrape"
            assert series_of(scrape(), "webhook_events_total") == {
                'webhook_events_total{outcome="processed"}': float(sent),
                'webhook_events_total{outcome="ignored"}': 0.0,
                'webhook_events_total{outcome="failed"}': 0.0,
                'webhook_events_total{outcome="duplicate"}': float(sent),
            }
            scrapes += 1


def test_the_breaker_gauge_is_read_from_the_breaker_at_each_scrape(make_app):
    from kamiyo.stripe_gateway import metrics as gateway_metrics

    app = make_app(BREAKER_RESET_TIMEOUT=600)
    client = app.test_client()
    breaker = app.extensions["stripe_gateway"].breaker

    def state() -> float:
        return samples(client.get("/metrics").get_data(as_text=True))["payment_circuit_breaker_state"]

    gateway_metrics.BREAKER_STATE.set(1)  # left from a change this process saw, since undone elsewhere
    assert state() == 0.0
    breaker._state.open(time.time())  # as another worker opens it in the shared store
    assert state() == 1.0
    breaker.reset()
    assert state() == 0.0


@pytest.mark.slow
def test_two_gunicorn_workers_report_the_breaker_they_share(isolated_environment, tmp_path, redis_url):
    import redis

    instance = isolated_environment
    samples_dir = tmp_path / "prometheus-multiproc"
    samples_dir.mkdir()
    store = redis.Redis.from_url(redis_url)
    opened_at = "kamiyo:breaker:stripe:opened_at"  # kamiyo/stripe_gateway/breaker.py's RedisState

    def scrape() -> float:
        response = requests.get(url + "/metrics", headers={"Connection": "close"}, timeout=10)
        return samples(response.text)["payment_circuit_breaker_state"]

    def scrapes_by_both_workers() -> set[float]:
        """The breaker's state in each scrape, until each worker has answered one. In bursts of
        concurrent scrapes: one after another, an idle machine's kernel can hand every
        connection to the same worker (a clean-clone CI run saw 100 in a row)."""
        from concurrent.futures import ThreadPoolExecutor

        start, found = len(logged(instance)), set()
        with ThreadPoolExecutor(16) as pool:
            for _ in range(40):
                found.update(pool.map(lambda _: scrape(), range(16)))
                if len({line["process"] for line in logged(instance)[start:] if line.get("path") == "/metrics"}) == 2:
                    return found
        raise AssertionError("one worker answered every scrape")

    with gunicorn(instance, f"sqlite:///{instance}/kamiyo.db", PROMETHEUS_MULTIPROC_DIR=str(samples_dir),
                  REDIS_URL=redis_url, BREAKER_RESET_TIMEOUT="600", LOG_LEVEL="INFO") as url:
        # Both workers booted: a scrape while one still creates its sample files can fail.
        wait_until(lambda: len({line["process"] for line in logged(instance)
                                if line.get("message") == "kamiyo configured"}) == 2, timeout=30)
        try:
            store.set(opened_at, repr(time.time()))
            assert scrapes_by_both_workers() == {1.0}
            store.delete(opened_at)  # a probe's success, in any worker
            assert scrapes_by_both_workers() == {0.0}
        finally:
            store.delete(opened_at)
