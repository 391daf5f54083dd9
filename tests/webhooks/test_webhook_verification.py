"""POST /api/v1/webhooks/stripe refuses anything Stripe did not sign, with a generic 400."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.webhooks.stripe_signing import SECRET, URL, customer, make_event, post, sign, signed
from kamiyo.extensions import db
from kamiyo.webhooks.models import WebhookEvent


def stored(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(db.select(WebhookEvent.event_id)))


def assert_refused(response, caplog, reason: str):
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_webhook"
    assert error["message"] == "The webhook could not be verified."
    assert error["support_id"] == response.headers["X-Request-ID"]
    assert reason not in response.get_data(as_text=True)
    assert any(reason in r.getMessage() for r in caplog.records if r.name == "kamiyo.webhooks"), reason


def test_signed_event_is_accepted_and_stored(app, client):
    event = make_event("customer.created", customer("cus_ok"))
    response = post(client, event)
    assert response.status_code == 200 and response.get_json() == {"status": "processed"}
    with app.app_context():
        row = db.session.scalar(db.select(WebhookEvent))
        assert (row.event_id, row.type, row.status, row.attempts) == (event["id"], "customer.created", "processed", 1)
        assert row.api_version == "2026-10-28.endive" and row.livemode is False
        assert row.created.timestamp() == event["created"] and row.received_at.tzinfo is not None
        assert json.loads(row.payload) == event


def test_tampered_body_is_refused(app, client, caplog):
    body, headers = signed(make_event("customer.created", customer("cus_t")))
    tampered = body.replace(b"ada@example.com", b"eve@example.com")
    assert_refused(client.post(URL, data=tampered, headers=headers), caplog, "signature does not match")
    assert stored(app) == []


def test_wrong_secret_is_refused(client, caplog):
    event = make_event("customer.created", customer("cus_w"))
    assert_refused(post(client, event, secret="whsec_someone_else"), caplog, "signature does not match")


def test_a_second_secret_is_accepted_during_rotation(make_app):
    client = make_app(STRIPE_WEBHOOK_SECRET=f"whsec_new_one, {SECRET}").test_client()
    assert post(client, make_event("customer.created", customer("cus_old"))).status_code == 200
    assert post(client, make_event("customer.created", customer("cus_new", user_id="user-2")),
                secret="whsec_new_one").status_code == 200
    assert post(client, make_event("customer.created", customer("cus_x", user_id="user-3")),
                secret="whsec_retired").status_code == 400


@pytest.mark.parametrize("offset, reason", [(-301, "timestamp is too old"), (301, "timestamp is in the future")])
def test_stale_and_future_timestamps_are_refused(client, caplog, offset, reason):
    event = make_event("customer.created", customer("cus_time"))
    assert_refused(post(client, event, timestamp=int(time.time()) + offset), caplog, reason)


def test_timestamps_within_the_tolerance_are_accepted(make_app):
    client = make_app(WEBHOOK_TOLERANCE_SECONDS=60).test_client()
    assert post(client, make_event("customer.created", customer("cus_a")), timestamp=int(time.time()) - 50).status_code == 200
    assert post(client, make_event("customer.created", customer("cus_b", user_id="u2")),
                timestamp=int(time.time()) - 70).status_code == 400


def test_missing_or_malformed_header_is_refused(client, caplog):
    body = json.dumps(make_event("customer.created", customer("cus_h"))).encode()
    assert_refused(client.post(URL, data=body), caplog, "missing Stripe-Signature header")
    assert_refused(client.post(URL, data=body, headers={"Stripe-Signature": "v1=abc"}), caplog,
                   "malformed Stripe-Signature header")


def test_a_non_ascii_signature_is_refused_and_counts_against_the_rate_limit(make_app, caplog):
    client = make_app(WEBHOOK_RATE_LIMIT="3/minute").test_client()
    body, headers = signed(make_event("customer.created", customer("cus_latin1")))
    headers["Stripe-Signature"] = headers["Stripe-Signature"][:-1] + "\u00e9"  # a byte outside ASCII
    responses = [client.post(URL, data=body, headers=headers) for _ in range(4)]
    for response in responses[:3]:
        assert_refused(response, caplog, "malformed Stripe-Signature header")
    assert responses[3].status_code == 429


def test_signed_non_json_and_non_events_are_refused(client, caplog):
    body = b"this is not json"
    assert_refused(client.post(URL, data=body, headers={"Stripe-Signature": sign(body)}), caplog, "body is not JSON")
    body = b'{"hello": "world"}'
    assert_refused(client.post(URL, data=body, headers={"Stripe-Signature": sign(body)}), caplog,
                   "body is not a Stripe event")
    body = b"\xff\xfe"
    response = client.post(URL, data=body, headers={"Stripe-Signature": "t=1,v1=00"})
    assert response.status_code == 400


def test_oversized_body_answers_413_before_verification(client, caplog):
    body = b"{" + b" " * (1024 * 1024) + b"}"
    with caplog.at_level(logging.WARNING, logger="kamiyo.webhooks"):
        response = client.post(URL, data=body, headers={"Stripe-Signature": sign(body)})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert any("larger than" in r.getMessage() for r in caplog.records)


def test_the_endpoint_needs_no_api_key_and_only_takes_post(client):
    assert client.get(URL).status_code == 405
    assert post(client, make_event("product.created", {"id": "prod_1"})).get_json() == {"status": "ignored"}
