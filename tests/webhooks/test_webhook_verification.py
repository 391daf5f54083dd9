"""POST /api/v1/webhooks/stripe refuses anything Stripe did not sign, with a generic 400."""

from __future__ import annotations

import json
import logging
import time

import pytest
import time_machine

from tests.webhooks.stripe_signing import SECRET, URL, customer, make_event, post, sign, signed
from kamiyo.extensions import db
from kamiyo.webhooks.models import WebhookEvent
from kamiyo.webhooks.verify import VerificationError, verify_event


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


NOW = 1_790_000_000  # a fixed instant: the window's edges are exact, whatever the real clock says


@pytest.mark.parametrize("offset, status, reason", [
    (-301, 400, "timestamp is too old"),
    (-300, 200, None),
    (300, 200, None),
    (301, 400, "timestamp is in the future"),
])
def test_the_time_window_is_exact_on_a_frozen_clock(client, caplog, offset, status, reason):
    event = make_event("customer.created", customer(f"cus_time{offset}", user_id=f"user{offset}"), created=NOW)
    with time_machine.travel(NOW, tick=False):
        response = post(client, event, timestamp=NOW + offset)
    if reason:
        assert_refused(response, caplog, reason)
    else:
        assert response.status_code == status, response.get_json()


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


# --- the header, parsed strictly, and the kind of each refusal ---------------------------------

BODY = json.dumps(make_event("customer.created", customer("cus_kind"), created=NOW)).encode()


def header(timestamp: int = NOW, body: bytes = BODY) -> str:
    return sign(body, timestamp=timestamp)


def kind_of(body: bytes, signature: str | None, tolerance: int = 300) -> str:
    with pytest.raises(VerificationError) as refused:
        verify_event(body, signature, [SECRET], tolerance, now=NOW)
    return refused.value.kind


def test_a_good_header_verifies():
    assert verify_event(BODY, header(), [SECRET], 300, now=NOW)["id"].startswith("evt_")


@pytest.mark.parametrize("signature, kind", [
    (None, "missing_header"),
    ("", "missing_header"),
    ("v1=abc", "malformed_header"),
    ("t=,v1=abc", "malformed_header"),
    ("t=-5,v1=abc", "malformed_header"),
    ("t=12x,v1=abc", "malformed_header"),
    (f"t={NOW}", "malformed_header"),
    (f"t={NOW},,v1=abc", "malformed_header"),
    (f"t={NOW},v1", "malformed_header"),
    (f"t={NOW},=abc,v1=abc", "malformed_header"),
    (f"t={NOW},v1=\u00e9", "malformed_header"),
    (f"t={NOW},v1={'0' * 64}", "bad_signature"),
])
def test_each_refusal_of_the_header_has_its_kind(signature, kind):
    assert kind_of(BODY, signature) == kind


def future_signed_behind_a_present_timestamp() -> str:
    # stripe-python skips " t=" (it does not strip) and reads the second t=, a stripping parser the first.
    return f"x=1, t={NOW},{header(NOW + 3600)}"


def test_a_second_timestamp_is_refused_even_when_one_is_signed():
    assert kind_of(BODY, future_signed_behind_a_present_timestamp()) == "malformed_header"
    assert kind_of(BODY, f"{header()},t={NOW}") == "malformed_header"


def test_a_future_signature_cannot_hide_behind_a_present_timestamp(client, caplog):
    with time_machine.travel(NOW, tick=False):
        response = client.post(URL, data=BODY, headers={"Stripe-Signature": future_signed_behind_a_present_timestamp()})
    assert_refused(response, caplog, "malformed Stripe-Signature header")


@pytest.mark.parametrize("spaced", [" t={t},{v}", "t={t}, {v}", "t={t} ,{v}", "t= {t},{v}", "t={t},{v} ", "t={t},\t{v}"])
def test_whitespace_around_items_is_refused(spaced):
    t, v = header().split(",")
    assert kind_of(BODY, spaced.format(t=t[2:], v=v)) == "malformed_header"


def test_the_window_is_read_from_the_parsed_timestamp_after_the_signature():
    assert kind_of(BODY, header(NOW - 301)) == "too_old"
    assert kind_of(BODY, header(NOW + 301)) == "too_new"
    # An unsigned header says nothing about its time: the signature is checked first.
    assert kind_of(BODY, f"t={NOW - 10_000},v1={'0' * 64}") == "bad_signature"
    assert kind_of(BODY, header(NOW - 61), tolerance=60) == "too_old"


def test_signed_bodies_that_are_not_events_have_their_kinds():
    for body, kind in [
        (b"this is not json", "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[" * 100 + b"]" * 100, "not_json"),
        (b'{"hello": "world"}', "not_event"),
        (b'{"id": "evt_1", "type": "x", "created": "soon", "data": {"object": {}}}', "not_event"),
    ]:
        signature = f"t={NOW},v1=" + __import__("hmac").new(
            SECRET.encode(), f"{NOW}.".encode() + body, "sha256").hexdigest()
        assert kind_of(body, signature) == kind, body


def test_refusals_are_counted_by_kind_family(client, caplog):
    before = {r: _rejected(client, r) for r in ("signature", "malformed")}
    with time_machine.travel(NOW, tick=False):
        client.post(URL, data=BODY, headers={"Stripe-Signature": future_signed_behind_a_present_timestamp()})
        client.post(URL, data=b"[]", headers={"Stripe-Signature": sign(b"[]", timestamp=NOW)})
    assert _rejected(client, "signature") == before["signature"] + 1
    assert _rejected(client, "malformed") == before["malformed"] + 1


def _rejected(client, reason: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(f'webhook_rejected_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


# --- exact refusals and bounds (mutation testing found these unpinned) -------------------------


def signed_body(body: bytes) -> str:
    import hmac

    return f"t={NOW},v1=" + hmac.new(SECRET.encode(), f"{NOW}.".encode() + body, "sha256").hexdigest()


def refusal(body: bytes, signature: str | None, secrets=(SECRET,)) -> tuple[str, str, str]:
    with pytest.raises(VerificationError) as refused:
        verify_event(body, signature, list(secrets), 300, now=NOW)
    return refused.value.kind, refused.value.reason, str(refused.value)


@pytest.mark.parametrize(("body", "signature", "secrets", "kind", "reason"), [
    (BODY, None, (SECRET,), "missing_header", "missing Stripe-Signature header"),
    (BODY, "v1=abc", (SECRET,), "malformed_header", "malformed Stripe-Signature header"),
    (BODY, " t=1,v1=abc", (SECRET,), "malformed_header", "malformed Stripe-Signature header"),
    (BODY, "t=1,v1=\u00e9", (SECRET,), "malformed_header", "malformed Stripe-Signature header"),
    (BODY, f"t={NOW},v1={'0' * 64}", (), "bad_signature", "no webhook secret configured"),
    (BODY, f"t={NOW},v1={'0' * 64}", (SECRET,), "bad_signature", "signature does not match"),
    (b"\xff", "t=1,v1=00", (SECRET,), "not_json", "body is not UTF-8"),
    (b"nope", None, (SECRET,), "not_json", "body is not JSON"),
    (b"[]", None, (SECRET,), "not_event", "body is not a Stripe event"),
])
def test_each_refusal_has_its_exact_kind_and_reason(body, signature, secrets, kind, reason):
    signature = signature if signature is not None or body == BODY else signed_body(body)
    assert refusal(body, signature, secrets) == (kind, reason, reason)


def test_the_window_refusals_have_their_exact_reasons():
    assert refusal(BODY, header(NOW - 301))[1:] == ("timestamp is too old", "timestamp is too old")
    assert refusal(BODY, header(NOW + 301))[1:] == ("timestamp is in the future", "timestamp is in the future")


def event_body(event_id: str, event_type: str) -> bytes:
    return json.dumps({"id": event_id, "type": event_type, "created": NOW, "data": {"object": {}}}).encode()


@pytest.mark.parametrize(("event_id", "event_type", "accepted"), [
    ("e", "t", True), ("e" * 255, "t" * 128, True),
    ("", "t", False), ("e", "", False), ("e" * 256, "t", False), ("e", "t" * 129, False),
])
def test_event_id_and_type_lengths_are_bounded(event_id, event_type, accepted):
    body = event_body(event_id, event_type)
    if accepted:
        assert verify_event(body, signed_body(body), [SECRET], 300, now=NOW)["id"] == event_id
    else:
        assert refusal(body, signed_body(body))[0] == "not_event"
