"""Tests for kamiyo.observability.logging: redaction and JSON log lines."""

from __future__ import annotations

import io
import json
import logging

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kamiyo.observability.logging import (
    RedactionFilter,
    RequestContextFilter,
    configure_logging,
    redact,
)


@pytest.fixture(autouse=True)
def restore_logging():
    """Undo configure_logging: remove Kamiyo handlers, restore levels."""
    root = logging.getLogger()
    stripe_logger = logging.getLogger("stripe")
    before = list(root.handlers)
    root_level, stripe_level = root.level, stripe_logger.level
    yield
    # Only touch what configure_logging changes: pytest adds and removes its
    # own capture handlers around each phase.
    for handler in list(root.handlers):
        if getattr(handler, "_kamiyo", False) and handler not in before:
            root.removeHandler(handler)
    for handler in before:
        if getattr(handler, "_kamiyo", False) and handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(root_level)
    stripe_logger.setLevel(stripe_level)


def _lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _luhn_check_digit(payload: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


# ---------------------------------------------------------------- redact()


@pytest.mark.parametrize(
    "text, secret, expected",
    [
        ("key sk_test_51HabcDEF123", "51HabcDEF123", "key sk_test_[REDACTED]"),
        ("key=sk_live_XYZ12345678", "XYZ12345678", "key=sk_live_[REDACTED]"),
        ("rk_live_abc12345xyz used", "abc12345xyz", "rk_live_[REDACTED] used"),
        ("rk_test_q1w2e3r4", "q1w2e3r4", "rk_test_[REDACTED]"),
        ("bare sk_abcdefgh12", "abcdefgh12", "bare sk_[REDACTED]"),
        ("secret whsec_abc123+/=", "abc123", "secret whsec_[REDACTED]"),
        ("Authorization: Bearer xyz.abc", "xyz.abc", "Authorization: [REDACTED]"),
        ("{'Authorization': 'Basic abc=='}", "abc==", "{'Authorization': '[REDACTED]'}"),
        ('{"authorization": "Bearer xyz"}', "xyz", '{"authorization": "[REDACTED]"}'),
        ("AUTHORIZATION=Bearer xyz&a=1", "xyz", "AUTHORIZATION=[REDACTED]&a=1"),
        ("[('Authorization', 'Bearer tok')]", "tok", "[('Authorization', '[REDACTED]')]"),
        ("cvc=123", "123", "cvc=[REDACTED]"),
        ('"cvc": "123"', "123", '"cvc": "[REDACTED]"'),
        ("'cvv': 1234", "1234", "'cvv': [REDACTED]"),
        ("card[cvc]=123&x=1", "123", "card[cvc]=[REDACTED]&x=1"),
        ("card%5Bcvc%5D=123", "123", "card%5Bcvc%5D=[REDACTED]"),
        ("cvc: 123", "123", "cvc: [REDACTED]"),
        ('{"card[cvc]": "123"}', "123", '{"card[cvc]": "[REDACTED]"}'),
        ("pay 4242424242424242 now", "4242424242424242", "pay [REDACTED CARD] now"),
        ("pay 4242 4242 4242 4242.", "4242 4242 4242 4242", "pay [REDACTED CARD]."),
        ("5555-5555-5555-4444", "5555-5555-5555-4444", "[REDACTED CARD]"),
        ("amex 4222222222222", "4222222222222", "amex [REDACTED CARD]"),
        ("on 2024-01-15 4242424242424242", "4242424242424242", "on 2024-01-15 [REDACTED CARD]"),
        # the key only starts a word once the card is gone: redact to a fixed point
        ("4242424242424242rk_test_0", "rk_test_0", "[REDACTED CARD]rk_test_[REDACTED]"),
    ],
)
def test_redact_secrets(text, secret, expected):
    out = redact(text)
    assert out == expected
    assert secret not in out
    assert redact(out) == out  # idempotent: filters may run more than once


@pytest.mark.parametrize(
    "text",
    [
        "card 4242424242424241 fails Luhn",
        "created 1700000000 at epoch",
        "order 12345678901234567890 is a 20-digit run",
        "order 42424242424242420000 is too long to be a card",
        "charge ch_3OqK2k2eZvKYlo2C1abcdef amount 2000 task_12345678",
        '"cvc_check": "pass", "param": "cvc", "code": "incorrect_cvc"',
        "authorization, then capture",
        "sk_short pk_test_abcdefgh12345",
        "",
    ],
)
def test_redact_leaves_ordinary_text_alone(text):
    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "[STRIPE VERSION] Healthy: API version 2023-10-16 is 363 days old.",
        "[STRIPE VERSION] CRITICAL: API version 2024-09-30.acacia is 500 days old.",
        "IDEMPOTENCY: returning existing payment for key op-42",
        "RATE LIMIT exceeded for 10.0.0.1 (5 per 1 minute)",
    ],
)
def test_redact_keeps_grep_markers(text):
    assert redact(text) == text


def test_redact_two_adjacent_cards_both_gone():
    out = redact("4242424242424242 5555-5555-5555-4444")
    assert out == "[REDACTED CARD] [REDACTED CARD]"


@st.composite
def printed_cards(draw) -> tuple[str, str]:
    """(a Luhn-valid card of 13-19 digits, as printed): one block, groups of four, Amex's
    4-6-5 (any length), or any other grouping, joined by spaces or dashes."""
    length = draw(st.integers(13, 19))
    payload = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    card = payload + _luhn_check_digit(payload)
    style = draw(st.sampled_from(["block", "fours", "amex", "any"]))
    if style == "block":
        cuts: list[int] = []
    elif style == "fours":
        cuts = list(range(4, length, 4))
    elif style == "amex":
        cuts = [4, 10]
    else:
        cuts = sorted(draw(st.sets(st.integers(1, length - 1), max_size=8)))
    separator = draw(st.sampled_from([" ", "-"]))
    bounds = [0, *cuts, length]
    return card, separator.join(card[a:b] for a, b in zip(bounds, bounds[1:], strict=False))


@settings(max_examples=300, deadline=None)
@given(
    printed=printed_cards(),
    prefix=st.text(max_size=40),
    suffix=st.text(max_size=40),
    left=st.sampled_from([" ", ": ", "=", "\n", "card ", "(", '"', "\t"]),
    right=st.sampled_from([" ", ".", ",", "\n", ")", '"', "&x=1", ""]),
)
def test_property_luhn_valid_card_never_survives(printed, prefix, suffix, left, right):
    card, shown = printed
    if left == " " and prefix[-1:].isdigit():
        prefix += "x"  # a digit before the space would make the card part of a longer number
    if right in ("", " ") and suffix[:1].isdigit():
        suffix = "x" + suffix  # likewise after it
    out = redact(prefix + left + shown + right + suffix)
    assert card not in out
    assert shown not in out
    assert "[REDACTED" in out  # as a card, or inside a redacted value ("Authorization: <card>")
    assert redact(out) == out


@pytest.mark.parametrize(
    "shown",
    ["378282246310005", "3782 822463 10005", "3782-822463-10005",  # Amex, 15 digits as 4-6-5
     "4222222222222", "6011 0009 9013 9424", "3056930009020004", "6200000000000005",
     "4000 0566 5566 5556 007"],  # 13, 16 and 19 digits
)
def test_every_length_and_grouping_is_redacted(shown):
    assert redact(f"card {shown} declined") == "card [REDACTED CARD] declined"


marker_soup = st.lists(
    st.sampled_from(
        ["sk_", "test_", "live_", "rk_", "whsec_", "Authorization", "authorization",
         ":", "=", ",", " ", "'", '"', "\\", "Bearer ", "cvc", "cvv", "[", "]",
         "%5B", "4242", "-", "1", "abcdefgh", "\n", "[REDACTED]"]
    ),
    max_size=20,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=marker_soup)
def test_property_redact_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


BOUNDARIES = [" ", "=", ": ", '"', "'", "\n", "(", ", ", "\t"]
alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
stripe_keys = st.tuples(st.sampled_from(["sk_live_", "sk_test_", "rk_live_", "rk_test_"]),
                        st.text(alnum, min_size=8, max_size=60)).map("".join)
webhook_secrets = st.text(alnum + "+/=_-", min_size=8, max_size=60).map(lambda tail: "whsec_" + tail)
header_values = st.tuples(
    st.sampled_from(["Authorization: Bearer ", "authorization=Bearer ", '"Authorization": "Basic ']),
    st.text(alnum + "._-", min_size=8, max_size=60),
).map(lambda parts: parts[1])


@settings(max_examples=300, deadline=None)
@given(
    secret=st.one_of(stripe_keys, webhook_secrets),
    prefix=st.text(max_size=40),
    suffix=st.text(max_size=40),
    left=st.sampled_from(BOUNDARIES),
    right=st.sampled_from(BOUNDARIES + [""]),
)
def test_property_no_secret_survives_redaction(secret, prefix, suffix, left, right):
    if right == "" and suffix[:1] in set(alnum + "+/=_-"):
        suffix = " " + suffix  # glued characters would be part of the secret itself
    out = redact(prefix + left + secret + right + suffix)
    assert secret not in out
    tail = secret[8:]  # not even its tail, after the prefix the log keeps
    shown = out.replace("[REDACTED]", "\0")  # the marker's own letters are no leak
    assert shown.count(tail) <= (prefix + suffix).count(tail)


@settings(max_examples=200, deadline=None)
@given(token=st.text(alnum + "._-", min_size=12, max_size=60),
       key=st.sampled_from(["Authorization: Bearer ", "authorization=Bearer ", "'Authorization': 'Basic "]),
       prefix=st.text(max_size=30).map(lambda s: s + "\n"))
def test_property_no_authorization_value_survives(token, key, prefix):
    out = redact(prefix + key + token + ("'" if key.endswith("'Basic ") else ""))
    shown = out.replace("[REDACTED]", "\0")  # the marker's own letters are no leak
    assert shown.count(token) <= (prefix + key).count(token)  # the key's own text may hold it


def test_luhn_helper_in_tests_is_right():
    assert "424242424242424" + _luhn_check_digit("424242424242424") == "4242424242424242"


# ----------------------------------------------------- configure_logging()


def test_one_json_object_per_line_with_fields():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("kamiyo.test")
    log.info("first %s", "line")
    log.warning("multi\nline message", extra={"order": 7})
    lines = _lines(stream)
    assert len(lines) == 2
    first, second = lines
    for rec in lines:
        assert {"timestamp", "level", "logger", "message"} <= rec.keys()
        assert rec["timestamp"].endswith("Z") and "T" in rec["timestamp"]
    assert first["level"] == "INFO"
    assert first["logger"] == "kamiyo.test"
    assert first["message"] == "first line"
    assert second["message"] == "multi\nline message"
    assert second["order"] == 7


def test_stripe_logger_secrets_in_args_and_extra_are_redacted():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("stripe").info(
        "request with key %s card %s",
        "sk_live_abcdefghijkl",
        4242424242424242,
        extra={
            "api_key": "sk_test_abcdefgh123",
            "headers": {"Authorization": "Bearer tok_123"},
            "card": {"number": 4242424242424242, "cvc": "123"},
        },
    )
    raw = stream.getvalue()
    for secret in ("abcdefghijkl", "abcdefgh123", "tok_123", "4242424242424242", '"123"'):
        assert secret not in raw
    (rec,) = _lines(stream)
    assert rec["logger"] == "stripe"
    assert rec["message"] == "request with key sk_live_[REDACTED] card [REDACTED CARD]"
    assert rec["api_key"] == "sk_test_[REDACTED]"
    assert rec["headers"] == {"Authorization": "[REDACTED]"}
    assert rec["card"] == {"number": "[REDACTED CARD]", "cvc": "[REDACTED]"}


def test_stripe_library_logfmt_lines_are_redacted():
    # stripe-python renders its own lines as logfmt (key=value) before logging
    from stripe import _util

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    _util.log_info(
        "Request to Stripe api",
        api_key="sk_test_abcdefgh123",
        post_data="card[number]=4242424242424242&card[cvc]=123",
    )
    raw = stream.getvalue()
    assert "abcdefgh123" not in raw and "4242424242424242" not in raw
    (rec,) = _lines(stream)
    assert "sk_test_[REDACTED]" in rec["message"]
    assert "card[cvc]=[REDACTED]" in rec["message"]


def test_exception_traceback_is_redacted_but_kept():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        raise ValueError("declined 4242 4242 4242 4242 whsec_s3cr3tvalue")
    except ValueError:
        logging.getLogger("kamiyo.test").exception("payment failed")
    raw = stream.getvalue()
    assert "4242 4242 4242 4242" not in raw
    assert "s3cr3tvalue" not in raw
    (rec,) = _lines(stream)
    assert rec["message"] == "payment failed"
    assert "Traceback" in rec["exc_info"]
    assert "ValueError: declined [REDACTED CARD] whsec_[REDACTED]" in rec["exc_info"]


def test_configure_logging_twice_leaves_one_kamiyo_handler():
    first_stream, second_stream = io.StringIO(), io.StringIO()
    first = configure_logging("INFO", stream=first_stream)
    second = configure_logging("WARNING", stream=second_stream)
    root = logging.getLogger()
    kamiyo = [h for h in root.handlers if getattr(h, "_kamiyo", False)]
    assert kamiyo == [second]
    assert first not in root.handlers
    assert root.level == logging.WARNING
    logging.getLogger("kamiyo.test").warning("only once")
    assert first_stream.getvalue() == ""
    assert len(_lines(second_stream)) == 1


def test_filters_are_on_the_handler():
    handler = configure_logging("INFO", stream=io.StringIO())
    kinds = [type(f) for f in handler.filters]
    assert kinds == [RequestContextFilter, RedactionFilter]


def test_stripe_logger_never_at_debug():
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    stripe_logger = logging.getLogger("stripe")
    assert logging.getLogger().level == logging.DEBUG
    assert stripe_logger.level >= logging.INFO
    assert not stripe_logger.isEnabledFor(logging.DEBUG)
    stripe_logger.debug("Post details: card[number]=4242424242424242")
    logging.getLogger("kamiyo.test").debug("app debug is on")
    assert [r["logger"] for r in _lines(stream)] == ["kamiyo.test"]


def test_level_names_and_numbers():
    configure_logging("warning", stream=io.StringIO())
    assert logging.getLogger().level == logging.WARNING
    configure_logging(logging.ERROR, stream=io.StringIO())
    assert logging.getLogger().level == logging.ERROR
    with pytest.raises(ValueError):
        configure_logging("LOUD", stream=io.StringIO())


# ------------------------------------------------------ RequestContextFilter


def test_request_id_inside_request():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    app = flask.Flask(__name__)
    with app.test_request_context("/"):
        flask.g.request_id = "abcdefgh1234"
        logging.getLogger("kamiyo.test").info("inside")
    (rec,) = _lines(stream)
    assert rec["request_id"] == "abcdefgh1234"


def test_request_id_outside_request_absent_or_null():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("kamiyo.test").info("outside")
    (rec,) = _lines(stream)
    assert rec.get("request_id") is None


def test_request_id_in_request_without_id_set():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    app = flask.Flask(__name__)
    with app.test_request_context("/"):
        logging.getLogger("kamiyo.test").info("no id yet")
    (rec,) = _lines(stream)
    assert rec.get("request_id") is None


# ------------------------------------------------------------ RedactionFilter


def _record(msg, args=(), **extra):
    record = logging.LogRecord("kamiyo.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_redaction_filter_renders_once_and_clears_args():
    record = _record("key %s", ("sk_test_abcdefgh123",))
    assert RedactionFilter().filter(record) is True
    assert record.msg == "key sk_test_[REDACTED]"
    assert record.args is None
    assert record.getMessage() == "key sk_test_[REDACTED]"


def test_redaction_filter_unformattable_args_do_not_leak():
    record = _record("%s %s", ("sk_live_abcdefgh123",))  # one arg short
    assert RedactionFilter().filter(record) is True
    assert "abcdefgh123" not in record.getMessage()


def test_redaction_filter_leaves_extras_objects_without_secrets():
    marker = object()
    record = _record("ok", thing=marker, count=3, note="plain")
    RedactionFilter().filter(record)
    assert record.thing is marker
    assert record.count == 3
    assert record.note == "plain"


# ------------------------------------------- one definition of a card number


card_soup = st.lists(
    st.sampled_from(["4242", "4242424242424242", "5555-5555-5555-4444", "378282246310005", "0", "1", "7",
                     " ", "-", "x", "  ", "4111 1111 1111 1111", "12"]),
    max_size=12,
).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(text=card_soup)
def test_redaction_and_input_validation_agree_on_what_a_card_is(text):
    # The API refuses exactly the text that logging would redact (kamiyo.card_data).
    from kamiyo.card_data import contains_card_number

    assert contains_card_number(text) == ("[REDACTED CARD]" in redact(text))
