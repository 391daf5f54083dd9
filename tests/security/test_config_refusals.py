"""Configuration that would weaken security stops the service, in one line; what only leaves
something open (no METRICS_TOKEN) is a loud warning at server start."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kamiyo.config import ConfigError
from tests.support import ROOT, TEST_SECRETS


@pytest.mark.parametrize("seconds", [0, -1, 601, 86400])
def test_webhook_tolerance_outside_1_to_600_is_refused(make_app, seconds):
    with pytest.raises(ConfigError, match=r"WEBHOOK_TOLERANCE_SECONDS is .*between 1 and 600"):
        make_app(WEBHOOK_TOLERANCE_SECONDS=seconds)


@pytest.mark.parametrize("seconds", [1, 300, 600])
def test_webhook_tolerance_within_range_is_accepted(make_app, seconds):
    assert make_app(WEBHOOK_TOLERANCE_SECONDS=seconds).config["WEBHOOK_TOLERANCE_SECONDS"] == seconds


@pytest.mark.parametrize(
    "url",
    ["http://api.stripe.com", "http://10.0.0.5:8420", "http://localhost.evil.example", "http://0.0.0.0:8420",
     "http://[2001:db8::1]:80", "ftp://api.stripe.com"],
)
def test_plain_http_to_another_host_is_refused(make_app, url):
    with pytest.raises(ConfigError, match="STRIPE_API_BASE"):
        make_app(STRIPE_API_BASE=url)


@pytest.mark.parametrize(
    "url",
    ["https://api.stripe.com", "https://stripe.internal.example:8443", "http://127.0.0.1:8420", "http://127.8.9.10",
     "http://localhost:8420", "http://[::1]:8420"],
)
def test_https_anywhere_and_plain_http_on_loopback_are_accepted(make_app, url):
    assert make_app(STRIPE_API_BASE=url).config["STRIPE_API_BASE"] == url


def _env(**settings: str) -> dict[str, str]:
    from kamiyo.config import DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=os.environ["KAMIYO_INSTANCE_PATH"], **settings)
    return env


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("WEBHOOK_TOLERANCE_SECONDS", "0", "WEBHOOK_TOLERANCE_SECONDS is 0"),
        ("STRIPE_API_BASE", "http://stripe.example.com", "is plain http:// to another host"),
    ],
)
def test_the_server_and_the_cli_refuse_to_start_in_one_line(setting, value, says):
    env = _env(**{setting: value})
    flask = Path(sys.executable).with_name("flask")
    done = subprocess.run([flask, "--app", "wsgi", "api-keys", "list"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    # gunicorn's master checks before any worker forks (gunicorn.conf.py's on_starting).
    gunicorn = Path(sys.executable).with_name("gunicorn")
    done = subprocess.run([gunicorn, "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0", "wsgi:app"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"kamiyo: configuration error: {setting}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_no_metrics_token_outside_demo_mode_is_a_loud_warning(make_app, caplog):
    from kamiyo.hardening import warn_about_settings

    with caplog.at_level(logging.WARNING, logger="kamiyo.security"):
        assert warn_about_settings(make_app().config) == ["METRICS_TOKEN"]
        assert warn_about_settings(make_app(METRICS_TOKEN="a-token-for-the-scraper").config) == []
        assert warn_about_settings(make_app(DEMO_MODE=True).config) == []
    [warning] = [r for r in caplog.records if r.name == "kamiyo.security"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("METRICS_TOKEN is not set: GET /metrics is public")
