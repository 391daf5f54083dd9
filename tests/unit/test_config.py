"""Configuration layering and start-up validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import stripe

from kamiyo import create_app
from kamiyo.config import REQUIRED_SECRETS, ConfigError

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRETS = {
    "SECRET_KEY": "test-secret-key",
    "STRIPE_SECRET_KEY": "sk_test_config",
    "STRIPE_WEBHOOK_SECRET": "whsec_config",
}


def test_defaults(isolated_environment):
    app = create_app({"TESTING": True})
    assert app.config["STRIPE_API_VERSION"] == stripe.api_version
    assert app.config["STRIPE_API_BASE"] == "https://api.stripe.com"
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{isolated_environment / 'kamiyo.db'}"
    assert app.config["SCHEDULER_ENABLED"] is False
    assert app.config["SCHEDULER_TIMEZONE"] == "UTC"
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024


def test_layers_defaults_instance_environment_test_mapping(isolated_environment, monkeypatch):
    (isolated_environment / "config.py").write_text(
        'SUPPORT_CONTACT = "instance@example.com"\nSCHEDULER_TIMEZONE = "Europe/Oslo"\n'
        'STRIPE_PUBLISHABLE_KEY = "pk_instance"\n'
    )
    app = create_app({"TESTING": True})
    assert app.config["SUPPORT_CONTACT"] == "instance@example.com"

    monkeypatch.setenv("SUPPORT_CONTACT", "env@example.com")
    monkeypatch.setenv("KAMIYO_STRIPE_PUBLISHABLE_KEY", "pk_prefixed")
    app = create_app({"TESTING": True})
    assert app.config["SUPPORT_CONTACT"] == "env@example.com"
    assert app.config["SCHEDULER_TIMEZONE"] == "Europe/Oslo"  # instance value still applies
    assert app.config["STRIPE_PUBLISHABLE_KEY"] == "pk_prefixed"

    app = create_app({"TESTING": True, "SUPPORT_CONTACT": "test@example.com"})
    assert app.config["SUPPORT_CONTACT"] == "test@example.com"


def test_environment_values_are_typed(monkeypatch):
    monkeypatch.setenv("SCHEDULER_ENABLED", "true")
    monkeypatch.setenv("STRIPE_TIMEOUT_SECONDS", "7.5")
    app = create_app({"TESTING": True})
    assert app.config["SCHEDULER_ENABLED"] is True
    assert app.config["STRIPE_TIMEOUT_SECONDS"] == 7.5


def test_invalid_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("SCHEDULER_ENABLED", "maybe")
    with pytest.raises(ConfigError, match="SCHEDULER_ENABLED"):
        create_app({"TESTING": True})


def test_webhook_secrets_are_a_list(monkeypatch):
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old,")
    app = create_app({"TESTING": True})
    assert app.config["STRIPE_WEBHOOK_SECRETS"] == ["whsec_new", "whsec_old"]


def test_postgres_alias_is_normalised(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@127.0.0.1/kamiyo")
    app = create_app({"TESTING": True})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql://u:p@127.0.0.1/kamiyo"


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_missing_secret_outside_tests_names_the_variable(monkeypatch, missing):
    for name, value in TEST_SECRETS.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=missing):
        create_app()


def test_missing_secret_names_both_ways_out(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "x")
    with pytest.raises(ConfigError) as raised:
        create_app()
    assert str(raised.value) == (
        "STRIPE_SECRET_KEY is not set. Either set SECRET_KEY, STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET "
        "(environment or instance/config.py), or use demo mode: `make run` without STRIPE_SECRET_KEY, and "
        "KAMIYO_DEMO_MODE=1 in front of a command meant for that demo"
    )


def test_demo_mode_makes_secrets_once_and_points_at_localstripe(monkeypatch, isolated_environment):
    monkeypatch.setenv("KAMIYO_DEMO_MODE", "1")
    first = create_app()
    second = create_app()
    assert first.config["STRIPE_SECRET_KEY"].startswith("sk_test_demo")
    assert first.config["STRIPE_SECRET_KEY"] == second.config["STRIPE_SECRET_KEY"]
    assert first.config["STRIPE_API_BASE"] == "http://127.0.0.1:8420"
    secrets_file = isolated_environment / "demo-secrets.json"
    assert oct(secrets_file.stat().st_mode & 0o777) == "0o600"


def _clean_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "SECRET_KEY"))}
    env["KAMIYO_INSTANCE_PATH"] = str(tmp_path / "instance")
    return env


def test_wsgi_without_secrets_stops_with_one_line(tmp_path):
    env = _clean_env(tmp_path)
    env["SECRET_KEY"] = "x"
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "STRIPE_SECRET_KEY is not set" in lines[0]


def test_gunicorn_without_secrets_stops_before_serving(tmp_path):
    env = _clean_env(tmp_path)
    env["PORT"] = "0"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "kamiyo: configuration error: SECRET_KEY is not set" in result.stderr
    assert "Booting worker" not in result.stderr


@pytest.mark.parametrize("name, value", [("WEBHOOK_RATE_LIMIT", "thirty"), ("WEBHOOK_RATE_LIMIT_COUNT", "some"),
                                         ("POSTGRES_LOCK_TIMEOUT_MS", "-1"), ("AUTH_FAILURE_RATE_LIMIT", "20"),
                                         ("LOGIN_RATE_LIMIT_PER_ACCOUNT", "5/minute;lots")])
def test_gunicorn_with_a_bad_setting_stops_before_serving(tmp_path, name, value):
    """Found by the master, not by each worker: workers that die at start are only restarted."""
    env = {**_clean_env(tmp_path), "PORT": "0", "SECRET_KEY": "x", "STRIPE_SECRET_KEY": "sk_test_x",
           "STRIPE_WEBHOOK_SECRET": "whsec_x", name: value}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert f"kamiyo: configuration error: {name}" in result.stderr, result.stderr[-500:]
    assert "Booting worker" not in result.stderr
