"""Every answer carries X-Content-Type-Options: nosniff; every JSON answer carries
Cache-Control: no-store (customer reads carry PII). Checked on every route the app has, with
and without a key or a session, on each method it takes, and on the error answers."""

from __future__ import annotations

import pytest

from tests.support import login, make_key, make_user


def _url(rule) -> str:
    values = {}
    for name, converter in rule._converters.items():
        values[name] = 1 if type(converter).__name__ in ("IdConverter", "IntegerConverter") else "x"
    return rule.build(values, append_unknown=False)[1]


def _answers(app, client, headers):
    answers = []
    for rule in app.url_map.iter_rules():
        url = _url(rule)
        for method in sorted(rule.methods - {"OPTIONS", "HEAD"}):
            kwargs = {"json": {}} if method in ("POST", "PATCH", "PUT", "DELETE") else {}
            answers.append((f"{method} {url}", client.open(url, method=method, headers=headers, **kwargs)))
        answers.append((f"HEAD {url}", client.head(url, headers=headers)))
        answers.append((f"OPTIONS {url}", client.options(url, headers=headers)))
    return answers


def _check(answers):
    assert answers
    no_nosniff = [what for what, answer in answers if answer.headers.get("X-Content-Type-Options") != "nosniff"]
    assert not no_nosniff, no_nosniff
    stored = [(what, answer.headers.get("Cache-Control")) for what, answer in answers
              if answer.is_json and answer.headers.get("Cache-Control") != "no-store"]
    assert not stored, stored


def test_every_route_anonymous_and_with_a_key(app):
    client = app.test_client()
    answers = _answers(app, client, {}) + _answers(app, client, make_key(app))
    _check(answers)
    # The point of no-store: a customer read with a valid key is JSON with PII in it.
    assert any(a.is_json and a.status_code < 300 for _, a in answers)


def test_every_route_with_a_dashboard_session(app):
    make_user(app, "admin@example.com", role="admin")
    client = app.test_client()
    assert login(client, "admin@example.com").status_code == 302
    _check(_answers(app, client, {}))


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/no/such/page", {}, 404),
        ("DELETE", "/health", {}, 405),
        ("TRACE", "/health", {}, 405),
        ("POST", "/api/v1/webhooks/stripe", {"data": "x" * (2 * 1024 * 1024)}, 413),
        ("POST", "/api/v1/payments/customers", {"data": "not json", "content_type": "text/plain"}, None),
        ("GET", "/static/ops.css", {}, 200),
        ("GET", "/api/v1/openapi.json", {}, 200),
        ("GET", "/metrics", {}, 200),
    ],
)
def test_error_and_static_answers(client, method, path, kwargs, status):
    answer = client.open(path, method=method, **kwargs)
    if status is not None:
        assert answer.status_code == status
    _check([(f"{method} {path}", answer)])


def test_an_unexpected_error_answer(make_app):
    app = make_app()

    @app.get("/api/v1/boom-for-the-test")
    def boom():
        raise RuntimeError("boom")

    answer = app.test_client().get("/api/v1/boom-for-the-test")
    assert answer.status_code == 500 and answer.is_json
    _check([("GET /api/v1/boom-for-the-test", answer)])


def test_a_view_that_chose_its_own_cache_policy_keeps_it(make_app):
    app = make_app()

    @app.get("/cached-for-the-test")
    def cached():
        return {"ok": True}, 200, {"Cache-Control": "private, max-age=5"}

    answer = app.test_client().get("/cached-for-the-test")
    assert answer.headers["Cache-Control"] == "private, max-age=5"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
