"""The one Bearer parse and the one 401 answer (kamiyo/bearer.py)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from kamiyo.bearer import bearer_token, unauthorized

SUPPORT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def parse(header: str | None) -> str | None:
    headers = {} if header is None else {"Authorization": header}
    with Flask(__name__).test_request_context(headers=headers):
        return bearer_token()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer kmy_abc", "kmy_abc"),
        ("bearer kmy_abc", "kmy_abc"),
        ("BEARER kmy_abc", "kmy_abc"),
        ("Bearer   kmy_abc  ", "kmy_abc"),
        ("Bearer a.b-c_d~e+f/g==", "a.b-c_d~e+f/g=="),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer    ", None),
        ("Basic dXNlcjpwYXNz", None),
        ("Token kmy_abc", None),
        ("Bearerkmy_abc", None),
        ("kmy_abc", None),
    ],
)
def test_bearer_token(header, expected):
    assert parse(header) == expected


@pytest.fixture
def app(make_app):
    app = make_app()

    @app.get("/api/v1/test/missing")
    def missing():
        raise unauthorized("kamiyo", "API key", "key")

    @app.get("/api/v1/test/invalid")
    def invalid():
        raise unauthorized("metrics", "metrics token", "METRICS_TOKEN", invalid="wrong token")

    return app


def test_401_without_a_token_names_no_error(client):
    response = client.get("/api/v1/test/missing")
    assert response.status_code == 401 and response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "user_action", "support_id"}
    assert error["code"] == "unauthorized"
    assert error["message"] == "A valid API key is required."
    assert error["user_action"] == "Send a valid API key as 'Authorization: Bearer <key>'."
    assert SUPPORT_ID.match(error["support_id"]) and error["support_id"] == response.headers["X-Request-ID"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="kamiyo"'


def test_401_for_a_refused_token_says_invalid_token(client):
    response = client.get("/api/v1/test/invalid")
    assert response.status_code == 401 and response.is_json
    error = response.get_json()["error"]
    assert set(error) == {"code", "message", "user_action", "support_id"}
    assert error["code"] == "unauthorized"
    assert error["message"] == "A valid metrics token is required."
    assert error["user_action"] == "Send a valid metrics token as 'Authorization: Bearer <METRICS_TOKEN>'."
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="metrics", error="invalid_token", error_description="wrong token"'
    )
