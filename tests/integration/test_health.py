"""GET /health and GET /api/v1/payments/health."""

from __future__ import annotations

from devtools.stripe_proxy import Fault
from tests.support import both_databases, make_key


@both_databases
def test_health_ok(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_health_503_when_database_is_unusable(make_app, tmp_path):
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing-dir/x.db")
    response = app.test_client().get("/health")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "database": "unavailable"}
    assert "missing-dir" not in response.get_data(as_text=True)


def test_payments_health_reaches_localstripe(stripe_app):
    response = stripe_app.test_client().get("/api/v1/payments/health", headers=make_key(stripe_app))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["stripe"]["reachable"] is True and body["stripe"]["ok"] is True
    assert body["api_version"]["configured"] == "2026-10-28.endive"  # the pin of stripe-python 16.1.0


def test_payments_health_is_cached_so_it_cannot_hammer_stripe(stripe_app):
    client, key = stripe_app.test_client(), make_key(stripe_app)
    first = client.get("/api/v1/payments/health", headers=key).get_json()["stripe"]["checked_at"]
    second = client.get("/api/v1/payments/health", headers=key).get_json()["stripe"]["checked_at"]
    assert first == second
    fresh = stripe_app.extensions["stripe_gateway"]
    fresh._health_ttl = 0
    third = client.get("/api/v1/payments/health", headers=key).get_json()["stripe"]["checked_at"]
    assert third != first


def test_payments_health_503_when_stripe_is_unreachable(app, client):
    # The default test app points at a closed loopback port.
    response = client.get("/api/v1/payments/health", headers=make_key(app))
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["stripe"] == {**body["stripe"], "reachable": False, "ok": False, "error": "unreachable"}


def test_payments_health_reports_a_refused_key_without_echoing_it(make_app, proxy):
    # localstripe accepts every sk_ key: the proxy answers Stripe's 401 in its place, over HTTP.
    proxy.add_faults(Fault("status", status=401, method="GET", path=r"^/v1/customers$",
                           error_type="invalid_request_error"))
    app = make_app(STRIPE_SECRET_KEY="sk_test_refused", STRIPE_API_BASE=proxy.url)
    response = app.test_client().get("/api/v1/payments/health", headers=make_key(app))
    assert response.status_code == 503
    body = response.get_json()
    assert body["stripe"]["reachable"] is True and body["stripe"]["error"] == "authentication_failed"
    assert "sk_test_refused" not in response.get_data(as_text=True)
    [probe] = proxy.requests_to("GET", r"^/v1/customers$")
    assert probe.status == 401


def test_health_sections_from_later_features_are_included(make_app, localstripe_url):
    from kamiyo.health import register_health_check

    app = make_app(STRIPE_API_BASE=localstripe_url)
    register_health_check(app, "circuit_breaker", lambda: {"ok": False, "state": "open"})
    response = app.test_client().get("/api/v1/payments/health", headers=make_key(app))
    assert response.status_code == 503
    assert response.get_json()["circuit_breaker"] == {"ok": False, "state": "open"}
