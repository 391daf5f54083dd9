"""Every API error answers the one JSON shape with a support id; other pages get HTML."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
import stripe
from flask import request

from kamiyo.http_errors import ApiError
from kamiyo.observability.logging import configure_logging

SUPPORT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
SECRET_TEXT = "sk_test_51SECRETKEYxyz SELECT * FROM customers"


@pytest.fixture
def app(make_app):
    app = make_app()

    @app.post("/api/v1/test/json")
    def needs_json():
        return {"got": request.get_json()}

    @app.get("/api/v1/test/boom")
    def boom():
        raise RuntimeError(SECRET_TEXT)

    @app.get("/api/v1/test/stripe-card")
    def card():
        raise stripe.CardError(SECRET_TEXT, "number", "card_declined",
                               json_body={"error": {"decline_code": "insufficient_funds"}}, http_status=402)

    @app.get("/api/v1/test/stripe-down")
    def down():
        raise stripe.APIConnectionError(SECRET_TEXT)

    @app.get("/api/v1/test/invalid")
    def invalid():
        raise ApiError(400, "validation_failed", "Some fields are invalid.", fields=["email", "user_id"])

    @app.get("/dashboard-test/boom")
    def html_boom():
        raise RuntimeError(SECRET_TEXT)

    return app


def assert_error_shape(response, status, code):
    assert response.status_code == status
    assert response.is_json, response.data[:200]
    error = response.get_json()["error"]
    assert set(error) >= {"code", "message", "user_action", "support_id"}
    assert error["code"] == code
    assert SUPPORT_ID.match(error["support_id"])
    assert error["support_id"] == response.headers["X-Request-ID"]
    body = response.get_data(as_text=True)
    assert "Traceback" not in body and "sk_test" not in body and "SELECT" not in body
    return error


def test_unknown_api_path_answers_json_404(client):
    assert_error_shape(client.get("/api/v1/nothing-here"), 404, "not_found")


def test_method_not_allowed_keeps_allow_header(client):
    response = client.delete("/health")
    assert_error_shape(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_non_json_body_is_415(client):
    response = client.post("/api/v1/test/json", data="a=b", content_type="application/x-www-form-urlencoded")
    assert_error_shape(response, 415, "unsupported_media_type")


def test_broken_json_is_400(client):
    response = client.post("/api/v1/test/json", data="{not json", content_type="application/json")
    assert_error_shape(response, 400, "bad_request")


def test_oversized_body_is_413(client):
    response = client.post("/api/v1/test/json", data="x" * (1024 * 1024 + 1), content_type="application/json")
    assert_error_shape(response, 413, "payload_too_large")


def test_unexpected_exception_is_generic_500_and_logged_redacted(app, client):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    response = client.get("/api/v1/test/boom", headers={"X-Request-ID": "trace-me-12345"})
    error = assert_error_shape(response, 500, "internal_error")
    assert error["support_id"] == "trace-me-12345"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = [line for line in lines if line["message"] == "unhandled error"]
    assert failure and failure[0]["request_id"] == "trace-me-12345"
    assert "sk_test_51SECRETKEYxyz" not in stream.getvalue()


def test_card_error_is_mapped_without_stripe_text(client):
    error = assert_error_shape(client.get("/api/v1/test/stripe-card"), 402, "insufficient_funds")
    assert "insufficient funds" in error["message"]


def test_stripe_outage_is_503(client):
    assert_error_shape(client.get("/api/v1/test/stripe-down"), 503, "payment_service_unreachable")


def test_api_error_lists_fields(client):
    error = assert_error_shape(client.get("/api/v1/test/invalid"), 400, "validation_failed")
    assert error["fields"] == ["email", "user_id"]


def test_pages_outside_the_api_get_html(client):
    response = client.get("/no-such-page", headers={"X-Request-ID": "html-support-id-1"})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "html-support-id-1" in response.get_data(as_text=True)

    response = client.get("/dashboard-test/boom")
    assert response.status_code == 500 and response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "sk_test" not in body and "Traceback" not in body


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("'; DROP TABLE users; --", "DROPTABLEusers--"),
        ("<script>alert('xss')</script>", "scriptalertxssscript"),
        ("../../../etc/passwd", "etcpasswd"),
        ("valid_id_123-456", "valid_id_123-456"),
    ],
)
def test_correlation_id_is_sanitised_and_echoed(client, raw, expected):
    response = client.get("/health", headers={"X-Request-ID": raw})
    assert response.headers["X-Request-ID"] == expected


def test_missing_or_unusable_correlation_id_gets_a_fresh_uuid(client):
    for headers in ({}, {"X-Request-ID": "; rm -rf /"}):
        value = client.get("/health", headers=headers).headers["X-Request-ID"]
        assert uuid.UUID(value).version == 4


def test_every_log_line_of_a_request_carries_its_id(app, client):
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    client.get("/health", headers={"X-Request-ID": "'; DROP TABLE users; --"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    request_lines = [line for line in lines if line.get("path") == "/health"]
    assert request_lines and request_lines[0]["request_id"] == "DROPTABLEusers--"
    assert "DROP TABLE" not in stream.getvalue()  # the raw id is never logged
