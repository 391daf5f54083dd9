"""Redaction also covers our own API keys, the configured METRICS_TOKEN and any bearer token;
stripe-python's STRIPE_LOG printing is switched off at import."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from kamiyo.observability.logging import redact
from tests.support import ROOT

KEY = "kmy_Zq3v9JtLw0-_aB4cD5eF6gH7iJ8kL9mN0oP1qR2sT3u"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /api/v1/payments/customers/{KEY}",
        f"key={KEY}&x=1",
        f'{{"api_key": "{KEY}"}}',
        f"Authorization: Bearer {KEY}",
    ],
)
def test_our_api_keys_are_redacted(text):
    cleaned = redact(text)
    assert KEY[12:16] not in cleaned, cleaned
    # The public prefix (as `api-keys list` shows it) stays: the log says which key it was.
    assert KEY[:12] + "[REDACTED]" in cleaned or "Authorization: [REDACTED]" in cleaned
    assert redact(cleaned) == cleaned


def test_a_key_prefix_alone_and_short_kmy_words_are_left_alone():
    assert redact(f"revoked {KEY[:12]}... and kmy_prefix, kmy_") == f"revoked {KEY[:12]}... and kmy_prefix, kmy_"


@pytest.mark.parametrize(
    "text",
    [
        "sent Bearer abc.DEF-123_x~y+z/w= to the proxy",
        "curl -H 'Authorization: Bearer abc.DEF-123'",
        "GET /x?h=Bearer%20abc.DEF-123",
        "bearer+abc.DEF-123",
        "X-Forwarded-Authorization was BEARER abc.DEF-123",
    ],
)
def test_bearer_tokens_are_redacted_wherever_they_appear(text):
    cleaned = redact(text)
    assert "abc.DEF-123" not in cleaned, cleaned
    assert redact(cleaned) == cleaned  # idempotent


def test_the_configured_metrics_token_is_redacted_by_value(make_app):
    token = "scrape-me-0f9e8d7c6b5a"
    assert token in redact(f"GET /metrics?token={token}")
    make_app(METRICS_TOKEN=token)
    assert redact(f"GET /metrics?token={token}") == "GET /metrics?token=[REDACTED]"


def test_the_metrics_token_is_redacted_in_the_apps_log_lines(make_app):
    token = "another-scrape-token-77"
    app = make_app(METRICS_TOKEN=token)
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_kamiyo", False))
    handler.setStream(stream)
    with app.test_request_context():
        logging.getLogger("kamiyo.test").warning("client sent %s", token, extra={"token": token})
    line = json.loads(stream.getvalue())
    assert token not in stream.getvalue() and line["message"] == "client sent [REDACTED]"


def test_stripe_log_is_cleared_at_import_so_stripe_python_prints_nothing():
    """stripe-python reads STRIPE_LOG once, at its import; with it, log_info and log_debug print
    request lines (and bodies) straight to stderr, past every logging handler."""
    code = (
        "import kamiyo, stripe\n"
        "from stripe import _util\n"
        "assert _util.STRIPE_LOG is None and stripe.log is None, _util.STRIPE_LOG\n"
        "_util.log_info('Request to Stripe api', url='https://x/sk_live_abcdefgh12345678')\n"
        "_util.log_debug('Post details', post_data='card[number]=4242424242424242')\n"
    )
    env = {**os.environ, "STRIPE_LOG": "debug"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_stripe_log_set_is_a_warning_at_server_start(make_app, caplog, monkeypatch):
    from kamiyo import hardening
    from kamiyo.stripe_gateway import library

    app = make_app(METRICS_TOKEN="set-for-this-test")
    monkeypatch.setattr(library, "STRIPE_LOG_IGNORED", "debug")
    with caplog.at_level(logging.WARNING, logger="kamiyo.security"):
        assert hardening.warn_about_settings(app.config) == ["STRIPE_LOG"]
    [record] = [r for r in caplog.records if r.name == "kamiyo.security"]
    assert record.getMessage().startswith("STRIPE_LOG is set and ignored")
