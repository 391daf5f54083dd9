"""Bad input gets a clear 4xx, never a 500: ids out of range, deeply nested JSON,
card numbers in free-text fields. Against the real app, localstripe behind the
emulator proxy, and SQLite and PostgreSQL where the database is involved."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from kamiyo.card_data import contains_card_number
from kamiyo.extensions import db
from kamiyo.ids import MAX_ID
from kamiyo.json_input import MAX_DEPTH, nesting_depth, too_deep
from kamiyo.models import Customer, Subscription
from kamiyo.payments.models import ClientIdempotencyKey, PaymentOperation
from kamiyo.webhooks import metrics as webhook_metrics
from kamiyo.webhooks.models import WebhookEvent
from tests.support import both_databases
from tests.webhooks.stripe_signing import URL as WEBHOOK_URL
from tests.webhooks.stripe_signing import customer, make_event, post, sign

HUGE_ID = 99999999999999999999999
# As written in a URL: 2**31, 2**63, 23 digits, 5000 digits (more than int() reads), zero.
OUT_OF_RANGE_IDS = [str(MAX_ID + 1), str(2**63), str(HUGE_ID), "9" * 5000, "0"]
DEEP = b"[" * 100_000 + b"]" * 100_000


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    error = response.get_json()["error"]
    assert error["code"] == code
    assert {"code", "message", "user_action", "support_id"} <= set(error)
    return error


def row_counts(app) -> dict[str, int]:
    """Every row our payment code could have written for a request."""
    with app.app_context():
        return {model.__tablename__: db.session.scalar(select(func.count()).select_from(model))
                for model in (Customer, Subscription, PaymentOperation, ClientIdempotencyKey)}


def new_customer(api) -> dict:  # noqa: F811
    response = api.post("/customers", json={"user_id": new_user(), "email": "ada@example.com"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- ids out of range ---------------------------------------------------------------

ID_ROUTES = [("GET", "/customers/{}"), ("GET", "/subscriptions/{}"), ("POST", "/subscriptions/{}/cancel")]


def _call(api, method: str, path: str, headers=None):  # noqa: F811
    return api.get(path, headers=headers) if method == "GET" else api.post(path, headers=headers)


@both_databases
@pytest.mark.parametrize("method, route", ID_ROUTES)
@pytest.mark.parametrize("bad_id", OUT_OF_RANGE_IDS, ids=["2**31", "2**63", "23-digits", "5000-digits", "zero"])
def test_url_id_out_of_range_answers_404(api, proxy, method, route, bad_id):  # noqa: F811
    for headers in (None, {"Idempotency-Key": uuid.uuid4().hex}):
        error_of(_call(api, method, route.format(bad_id), headers), 404, "not_found")
    assert proxy.requests == []


@both_databases
@pytest.mark.parametrize("method, route", ID_ROUTES)
def test_url_id_at_the_top_of_the_range_is_looked_up(api, method, route):  # noqa: F811
    expected = "customer_not_found" if route.startswith("/customers") else "subscription_not_found"
    error_of(_call(api, method, route.format(MAX_ID)), 404, expected)


@both_databases
def test_url_ids_in_range_still_work(api, plan_id):  # noqa: F811
    created = new_customer(api)
    assert api.get(f"/customers/{created['id']}").get_json() == created
    sub = api.post("/subscriptions", json={"customer_id": created["id"], "price_id": plan_id, "tier": "pro",
                                           "payment_method": "pm_card_visa"})
    assert sub.status_code == 201, sub.get_json()
    assert api.get(f"/subscriptions/{sub.get_json()['id']}").status_code == 200
    assert api.post(f"/subscriptions/{sub.get_json()['id']}/cancel").get_json()["status"] == "canceled"


@both_databases
@pytest.mark.parametrize("bad_id", [MAX_ID + 1, 2**63, HUGE_ID, 0, -1, True, 1.5, "1"])
def test_body_id_out_of_range_answers_400_naming_the_field(api, proxy, payments_app, plan_id, bad_id):  # noqa: F811
    body = {"customer_id": bad_id, "price_id": plan_id, "tier": "pro"}
    for headers in (None, {"Idempotency-Key": uuid.uuid4().hex}):
        error = error_of(api.post("/subscriptions", json=body, headers=headers), 400, "validation_failed")
        assert error["fields"] == ["customer_id"]
    assert proxy.requests == []
    assert set(row_counts(payments_app).values()) == {0}


@both_databases
def test_body_id_at_the_top_of_the_range_is_looked_up(api, plan_id):  # noqa: F811
    response = api.post("/subscriptions", json={"customer_id": MAX_ID, "price_id": plan_id, "tier": "pro"})
    error_of(response, 404, "customer_not_found")


# -- deeply nested JSON: the API ----------------------------------------------------

def nested_field(levels: int) -> bytes:
    """A customer body `levels` deep: the object, then user_id in levels - 1 arrays."""
    return (b'{"email": "ada@example.com", "user_id": ' + b"[" * (levels - 1) + b'"u"'
            + b"]" * (levels - 1) + b"}")


@both_databases
@pytest.mark.parametrize("path", ["/customers", "/subscriptions", "/subscriptions/1/cancel"])
@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "idempotency-key"])
def test_deeply_nested_body_answers_400(api, proxy, payments_app, path, with_key):  # noqa: F811
    headers = {"Content-Type": "application/json"}
    if with_key:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    for body in (DEEP, b'{"name": ' + DEEP + b"}"):
        error = error_of(api.post(path, data=body, headers=headers), 400, "invalid_json")
        assert str(MAX_DEPTH) in error["message"]
    assert proxy.requests == []
    assert set(row_counts(payments_app).values()) == {0}


def test_one_level_too_deep_is_refused_and_the_bound_itself_is_parsed(api, proxy):  # noqa: F811
    headers = {"Content-Type": "application/json"}
    assert nesting_depth(nested_field(MAX_DEPTH + 1)) == MAX_DEPTH + 1
    error_of(api.post("/customers", data=nested_field(MAX_DEPTH + 1), headers=headers), 400, "invalid_json")
    # At the bound the body is parsed: user_id is refused for what it is, not for its depth.
    error = error_of(api.post("/customers", data=nested_field(MAX_DEPTH), headers=headers), 400,
                     "validation_failed")
    assert error["fields"] == ["user_id"]
    assert proxy.requests == []


def test_brackets_inside_strings_do_not_count(api):  # noqa: F811
    for name in ("[" * 100 + "{" * 100, 'Ada \\"[[[[' + "[" * 100 + '"'):
        response = api.post("/customers", json={"user_id": new_user(), "email": "ada@example.com", "name": name})
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["name"] == name


# -- deeply nested JSON: the webhook ------------------------------------------------

def signed_event_nested(levels: int) -> bytes:
    """A Stripe event `levels` deep: event, data, object, then levels - 3 arrays."""
    event = make_event("product.created", {"id": "prod_deep", "object": "product", "deep": "@DEEP@"})
    arrays = levels - 3
    return json.dumps(event).encode().replace(b'"@DEEP@"', b"[" * arrays + b"]" * arrays)


def post_signed(client, body: bytes):
    return client.post(WEBHOOK_URL, data=body,
                       headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"})


def stored_events(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(WebhookEvent.event_id)))


def malformed_count() -> float:
    return webhook_metrics.REJECTED.labels("malformed")._value.get()


@both_databases
@pytest.mark.parametrize("body", [DEEP, signed_event_nested(100_000), signed_event_nested(MAX_DEPTH + 1)],
                         ids=["100000-deep-array", "100000-deep-event", "33-deep-event"])
def test_signed_deeply_nested_webhook_is_refused_as_malformed(app, client, caplog, body):
    before = malformed_count()
    with caplog.at_level(logging.WARNING, logger="kamiyo.webhooks"):
        response = post_signed(client, body)
    error = error_of(response, 400, "invalid_webhook")
    assert error["message"] == "The webhook could not be verified."
    assert malformed_count() == before + 1
    assert any(f"nested deeper than {MAX_DEPTH}" in r.getMessage() for r in caplog.records
               if r.name == "kamiyo.webhooks")
    assert stored_events(app) == []


@both_databases
def test_stripe_events_within_the_bound_are_accepted(app, client):
    before = malformed_count()
    at_the_bound = signed_event_nested(MAX_DEPTH)
    assert nesting_depth(at_the_bound) == MAX_DEPTH
    assert post_signed(client, at_the_bound).get_json() == {"status": "ignored"}

    # An ordinary event, one with more brackets than the bound (the exact check runs),
    # and one whose strings hold brackets and escaped quotes.
    ordinary = make_event("customer.created", customer("cus_ok", user_id="user-ok"))
    many = make_event("customer.created", customer("cus_many", user_id="user-many",
                                                   tags=[[{"a": [1]}] for _ in range(MAX_DEPTH)]))
    stringy = make_event("customer.created", customer("cus_str", user_id="user-str",
                                                      description='[[{{"' * 50 + "\\"))
    assert not too_deep(json.dumps(many).encode()) and json.dumps(many).count("[") > MAX_DEPTH
    for event in (ordinary, many, stringy):
        response = post(client, event)
        assert response.status_code == 200 and response.get_json() == {"status": "processed"}, response.get_json()
    assert malformed_count() == before
    expected = [json.loads(at_the_bound)["id"]] + [e["id"] for e in (ordinary, many, stringy)]
    assert sorted(stored_events(app)) == sorted(expected)


# -- the depth scan itself ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9\u2200\n'),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=3), children, max_size=4),
    max_leaves=40,
)


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


@settings(max_examples=300, deadline=None, database=None)
@given(value=json_values, ensure_ascii=st.booleans(), encoding=st.sampled_from(["utf-8", "utf-16", "utf-32-be"]))
def test_nesting_depth_is_exact_on_json(value, ensure_ascii, encoding):
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode(encoding)
    assert nesting_depth(body) == depth_of(value)


@pytest.mark.parametrize("body, depth", [
    (b'[[["abc', 3),  # unterminated string: the parser stops inside it
    (b'[[["a\\"]]]', 3),  # the quote is escaped: the closers are in the string
    (b'"\\' * 1000 + b"[[[", 0),  # all one unterminated string
    (b"]]][[[", 0),  # a parser stops at the first `]`
    (b"[1, [2, [3]], {}]", 3),
    (b"", 0),
])
def test_nesting_depth_of_broken_json_is_never_less_than_a_parser_reaches(body, depth):
    assert nesting_depth(body) == depth
    assert too_deep(body, limit=depth) is False
    if depth:
        assert too_deep(body, limit=depth - 1) is True


# -- card numbers in free-text fields ----------------------------------------------

def luhn_complete(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return payload + str((10 - total % 10) % 10)


def card_numbers(length: int):
    return st.text(alphabet="0123456789", min_size=length - 1, max_size=length - 1).map(luhn_complete)


def _groups(digits: str, sizes: list[int]) -> list[str]:
    out, start = [], 0
    for size in sizes:
        if start < len(digits):
            out.append(digits[start:start + size])
            start += size
    if start < len(digits):
        out.append(digits[start:])
    return out


GROUPINGS = {
    "one block": lambda d: d,
    "4-4-4-4 spaces": lambda d: " ".join(_groups(d, [4] * 5)),
    "4-4-4-4 dashes": lambda d: "-".join(_groups(d, [4] * 5)),
    "amex 4-6-5 spaces": lambda d: " ".join(_groups(d, [4, 6])),
    "amex 4-6-5 dashes": lambda d: "-".join(_groups(d, [4, 6])),
}

# Where a card is typed: the endpoint and the body, the card as `shown` in the field.
FIELDS = {
    "name": lambda shown, ctx: ("/customers", {"user_id": new_user(), "email": "ada@example.com",
                                               "name": f"Ada {shown}"}),
    "user_id": lambda shown, ctx: ("/customers", {"user_id": shown, "email": "ada@example.com"}),
    "email": lambda shown, ctx: ("/customers", {"user_id": new_user(), "email": f"{shown}@example.com"}),
    "tier": lambda shown, ctx: ("/subscriptions", {"customer_id": ctx["customer_id"], "price_id": ctx["plan_id"],
                                                   "tier": shown, "payment_method": "pm_card_visa"}),
}


def assert_not_logged(caplog, *secrets: str) -> None:
    for record in caplog.records:
        text = record.getMessage() + repr(vars(record))
        for secret in secrets:
            assert secret not in text, f"{record.name} logged it: {record.getMessage()}"


@pytest.fixture
def card_context(api, plan_id, proxy):  # noqa: F811
    """A real customer to subscribe, then a clean proxy record."""
    context = {"customer_id": new_customer(api)["id"], "plan_id": plan_id}
    proxy.clear_requests()
    return context


@both_databases
@pytest.mark.parametrize("field", FIELDS)
@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_card_numbers_are_refused_and_never_stored_logged_or_sent(api, proxy, payments_app, card_context,  # noqa: F811
                                                                   caplog, field, data):
    caplog.clear()
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="kamiyo")
    rows_before = row_counts(payments_app)
    typed = []
    for length in range(13, 20):
        digits = data.draw(card_numbers(length), label=f"{length} digits")
        for grouping, show in GROUPINGS.items():
            shown = show(digits)
            path, body = FIELDS[field](shown, card_context)
            response = api.post(path, json=body)
            assert response.status_code == 400, (grouping, shown, response.get_json())
            error = response.get_json()["error"]
            assert (error["code"], error["fields"]) == ("card_data_not_allowed", [field])
            assert digits not in response.get_data(as_text=True) and shown not in response.get_data(as_text=True)
            typed += [digits, shown]
    assert proxy.requests == []
    assert row_counts(payments_app) == rows_before
    assert_not_logged(caplog, *typed)


@both_databases
def test_card_with_expiry_and_cvc_leaves_no_trace(api, proxy, payments_app, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG, logger="kamiyo")
    for name in ("Ada 4242 4242 4242 4242", "4111 1111 1111 1111 exp 12/29 cvc 123"):
        for headers in (None, {"Idempotency-Key": uuid.uuid4().hex}):
            response = api.post("/customers", json={"user_id": new_user(), "email": "ada@example.com", "name": name},
                                headers=headers)
            assert error_of(response, 400, "card_data_not_allowed")["fields"] == ["name"]
            text = response.get_data(as_text=True)
            assert "4242" not in text and "4111" not in text and "cvc" not in text and "12/29" not in text
    assert proxy.requests == []
    assert set(row_counts(payments_app).values()) == {0}
    assert_not_logged(caplog, "4242 4242", "4111 1111", "4111111111111111", "cvc 123", "12/29")


def test_overlong_text_is_refused_without_a_slow_card_scan(api, proxy, payments_app):  # noqa: F811
    # Scanning 800 kB of "1 1 1 ..." for cards takes seconds; no field takes that much text.
    for name in ("1 " * 400_000, "Ada 4242 4242 4242 4242 " + "x" * 2000):
        started = time.monotonic()
        response = api.post("/customers", json={"user_id": new_user(), "email": "ada@example.com", "name": name})
        assert error_of(response, 400, "validation_failed")["fields"] == ["name"]
        assert time.monotonic() - started < 2
        assert "4242" not in response.get_data(as_text=True)
    assert proxy.requests == []
    assert set(row_counts(payments_app).values()) == {0}


@both_databases
def test_ordinary_numbers_are_still_accepted(api, plan_id, payments_app):  # noqa: F811
    for name in ("Ada +1 415 555 0100", "Ada +1-415-555-0100", "Order 424242424242", "Ref 4242424242424241",
                 "4242 4242 4242 4241", "born 1815-12-10, 36 years"):
        assert not contains_card_number(name)
        response = api.post("/customers", json={"user_id": new_user(), "email": "ada@example.com", "name": name})
        assert response.status_code == 201, (name, response.get_json())
        assert response.get_json()["name"] == name
    user = f"user_4242424242424241_{uuid.uuid4().hex[:8]}"  # unique: localstripe outlives the test
    response = api.post("/customers", json={"user_id": user, "email": "4242424242424241@example.com"})
    assert response.status_code == 201, response.get_json()
    assert (response.get_json()["user_id"], response.get_json()["email"]) == (user, "4242424242424241@example.com")
    subscribed = api.post("/subscriptions", json={"customer_id": response.get_json()["id"], "price_id": plan_id,
                                                  "tier": "pro-4242424242424241", "payment_method": "pm_card_visa"})
    assert subscribed.status_code == 201, subscribed.get_json()
    assert subscribed.get_json()["tier"] == "pro-4242424242424241"
