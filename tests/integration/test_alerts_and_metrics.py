"""The alerts module and GET /metrics."""

from __future__ import annotations

import json
import logging

from prometheus_client import Counter

from tests.support import both_databases, closed_port_url, wait_until
from kamiyo.observability.alerts import send_alert

ALERT_TEST_COUNTER = Counter("kamiyo_test_alerts_metric_total", "A counter only the tests increment")


@both_databases
def test_alert_is_logged_posted_and_deduplicated_per_key_and_hour(make_app, slack, caplog):
    url, received = slack
    app = make_app(ALERT_WEBHOOK_URL=url)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
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
