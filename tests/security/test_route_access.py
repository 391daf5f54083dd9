"""Every route of the running app, walked from app.url_map: each one that needs an API key
or a session refuses anonymous access (401 JSON, or a redirect to the login) and the wrong
scope (403 insufficient_scope) or role (403).

The public routes are an explicit list: a new route that forgets its guard is not on it,
and fails here.
"""

from __future__ import annotations

import pytest

from kamiyo.api_keys import create_api_key
from kamiyo.scopes import OPS_READ, PAYMENTS_READ, PAYMENTS_WRITE, SCOPES
from tests.support import csrf_token, login, make_user

# (method, rule) answered to anyone, each for its reason.
PUBLIC = {
    ("GET", "/health"),  # liveness for the load balancer: status and database only
    # Anonymous: ok/degraded and the version status only; the detail needs ops:read (tested below).
    ("GET", "/api/v1/payments/health"),
    ("GET", "/api/v1/openapi.json"),  # the API's own description: no data
    ("POST", "/api/v1/webhooks/stripe"),  # Stripe's: its signature is the credential
    ("GET", "/"),  # a redirect: to the dashboard or to the login
    ("GET", "/login"),
    ("POST", "/login"),  # limited per IP and per account
    ("POST", "/logout"),  # CSRF-checked; ends the caller's own session only
    ("GET", "/static/<path:filename>"),  # the stylesheet
}
# Public only while METRICS_TOKEN is unset (start-up warns then); tested with a token.
METRICS_TOKEN_ROUTES = {("GET", "/metrics")}
# Dashboard routes only an admin may use; every other /dashboard/ route takes a viewer too.
ADMIN = {
    ("GET", "/dashboard/confirm/<name>"),
    ("POST", "/dashboard/actions/<name>"),
    ("POST", "/dashboard/actions/create-api-key"),
    ("POST", "/dashboard/api-keys/new"),
}
# Sample values for the URL's variables: each reaches the guard (an id in range, a known action).
SAMPLES = {"customer_id": 1, "subscription_id": 1, "name": "reset-breaker", "event_id": "evt_1"}


def needed_scope(method: str, rule: str) -> str:
    """The issue's map of scopes to routes, written out apart from the code under test."""
    if rule.startswith("/api/v1/ops/"):
        return OPS_READ
    if rule.startswith("/api/v1/payments/"):
        return PAYMENTS_READ if method == "GET" else PAYMENTS_WRITE
    raise AssertionError(f"no scope known for {method} {rule}: add it to the issue's map and here")


def routes(app) -> list[tuple[str, str, str]]:
    """(method, rule, a URL for it) for every route and method."""
    found = []
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            values = {name: SAMPLES.get(name, "x") for name in rule.arguments}
            url = url_for(rule.endpoint, **values)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                found.append((method, rule.rule, url))
    return found


@pytest.fixture
def app(make_app):
    # The walk refuses many requests from one IP on purpose: the failure limit is tested elsewhere.
    return make_app(AUTH_FAILURE_RATE_LIMIT="1000/minute")


@pytest.fixture
def walked(app):
    return routes(app)


def send(client, method: str, url: str, headers=None):
    return client.open(url, method=method, json={} if method != "GET" else None, headers=headers or {})


def key(app, *scopes: str) -> dict[str, str]:
    with app.app_context():
        _, plaintext = create_api_key("route-walk", scopes)
    return {"Authorization": f"Bearer {plaintext}"}


def test_every_route_is_public_by_the_list_or_guarded(walked):
    for method, rule, _ in walked:
        if (method, rule) in PUBLIC | METRICS_TOKEN_ROUTES:
            continue
        assert rule.startswith(("/api/", "/dashboard/")), (
            f"{method} {rule} is neither on the public list nor under /api/ or /dashboard/: guard it (an API key "
            "scope or a login), or add it to PUBLIC with the reason it may be public"
        )


def test_api_routes_refuse_anonymous_callers_and_unknown_keys(app, walked):
    client = app.test_client()
    for method, rule, url in walked:
        if (method, rule) in PUBLIC or not rule.startswith("/api/"):
            continue
        for headers in (None, {"Authorization": "Bearer kmy_unknown-key"}):
            answer = send(client, method, url, headers)
            assert answer.status_code == 401, (method, rule, answer.status_code)
            assert answer.get_json()["error"]["code"] == "unauthorized", (method, rule)
            assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="kamiyo"'), (method, rule)


def test_api_routes_refuse_a_key_without_their_scope(app):
    client = app.test_client()
    keys = {scope: key(app, *(s for s in SCOPES if s != scope)) for scope in SCOPES}
    checked = set()
    for method, rule, url in routes(app):
        if (method, rule) in PUBLIC or not rule.startswith("/api/"):
            continue
        scope = needed_scope(method, rule)
        answer = send(client, method, url, keys[scope])
        assert answer.status_code == 403, (method, rule, answer.status_code)
        assert answer.get_json()["error"]["code"] == "insufficient_scope", (method, rule)
        assert scope in answer.get_json()["error"]["message"], (method, rule)
        # The same route with its scope gets past the guard (whatever the request then gets).
        passed = send(client, method, url, key(app, scope))
        assert passed.status_code not in (401, 403), (method, rule, passed.status_code)
        checked.add(scope)
    assert checked == set(SCOPES)  # the walk reached a route of every scope


def test_the_payments_health_detail_is_behind_ops_read(app):
    client = app.test_client()
    assert set(client.get("/api/v1/payments/health").get_json()) == {"status", "api_version"}
    refused = client.get("/api/v1/payments/health", headers=key(app, PAYMENTS_READ, PAYMENTS_WRITE))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "insufficient_scope"
    detail = client.get("/api/v1/payments/health", headers=key(app, OPS_READ)).get_json()
    assert {"stripe", "circuit_breaker", "worker"} <= set(detail)


def test_metrics_refuse_anonymous_callers_when_a_token_is_set(make_app):
    app = make_app(METRICS_TOKEN="a-metrics-token-for-tests", AUTH_FAILURE_RATE_LIMIT="1000/minute")
    client = app.test_client()
    for method, rule, url in routes(app):
        if (method, rule) in METRICS_TOKEN_ROUTES:
            assert send(client, method, url).status_code == 401, (method, rule)
            assert send(client, method, url, key(app, *SCOPES)).status_code == 401, (method, rule)


def test_dashboard_routes_send_anonymous_visitors_to_the_login(app, walked):
    client = app.test_client()
    for method, rule, url in walked:
        if (method, rule) in PUBLIC or not rule.startswith("/dashboard/"):
            continue
        answer = send(client, method, url)
        assert answer.status_code == 302, (method, rule, answer.status_code)
        assert answer.headers["Location"].startswith("/login?next="), (method, rule)


def test_admin_routes_refuse_a_viewer(app, walked):
    make_user(app, "viewer@example.com", "viewer")
    client = app.test_client()
    login(client, "viewer@example.com")
    token = csrf_token(client.get("/dashboard/").get_data(as_text=True))
    seen = set()
    for method, rule, url in walked:
        if (method, rule) not in ADMIN:
            continue
        answer = client.open(url, method=method, data={"csrf_token": token, "target": "1", "name": "x"})
        assert answer.status_code == 403, (method, rule, answer.status_code)
        seen.add((method, rule))
    assert seen == ADMIN  # the list names routes that exist
