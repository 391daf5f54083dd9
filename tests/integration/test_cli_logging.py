"""One-off `flask` commands log warnings and errors only, unless --verbose; the servers
(gunicorn, `flask run`) and `flask scheduler run` log at LOG_LEVEL as before."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys

import click
import pytest
from flask.cli import run_command

from kamiyo.observability import logging as kamiyo_logging
from tests.support import ROOT
from tests.travel.clock import child_env

FLASK = [sys.executable, "-m", "flask", "--app", "wsgi"]
# Each command's clock starts at noon 30 days after VERSION: its start-up line says "30 days old".
START = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.UTC)
VERSION = "2026-11-10"
MIGRATION_0001 = "Running upgrade  -> 0001, core tables: customers, subscriptions, api keys, dashboard users"


@pytest.fixture
def demo_env(tmp_path):
    """The environment of an operator's shell next to a demo database (migrated)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "SECRET_KEY", "LOG_"))}
    # A version 30 days old by the commands' clock: healthy, an INFO line.
    env = child_env(START, env)
    env.update(KAMIYO_INSTANCE_PATH=str(tmp_path / "instance"), KAMIYO_DEMO_MODE="1",
               STRIPE_API_VERSION=VERSION)
    subprocess.run([*FLASK, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=120)
    return env


def flask(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def messages(stderr: str) -> list[tuple[str, str]]:
    return [(line["level"], line["message"]) for line in map(json.loads, stderr.splitlines())]


def test_a_one_off_command_prints_its_answer_and_no_info_lines(demo_env):
    done = flask(demo_env, "api-keys", "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "No API keys. Create one with: flask --app wsgi api-keys create NAME\n"
    assert done.stderr == ""


def test_verbose_shows_the_start_up_lines_too(demo_env):
    done = flask(demo_env, "api-keys", "list", "--verbose")
    assert done.returncode == 0, done.stderr
    assert messages(done.stderr) == [
        ("INFO", f"[STRIPE VERSION] Healthy: API version {VERSION} is 30 days old."),
        ("INFO", "kamiyo configured"),
    ]


def test_db_upgrade_verbose_shows_each_migration(tmp_path, demo_env):
    env = {**demo_env, "KAMIYO_INSTANCE_PATH": str(tmp_path / "fresh")}
    quiet = flask(env, "db", "upgrade")
    assert quiet.returncode == 0 and quiet.stderr == ""
    env["KAMIYO_INSTANCE_PATH"] = str(tmp_path / "fresh-verbose")
    verbose = flask(env, "db", "upgrade", "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    shown = messages(verbose.stderr)
    assert shown[:2] == [  # the start-up lines first, held back until --verbose was read
        ("INFO", f"[STRIPE VERSION] Healthy: API version {VERSION} is 30 days old."),
        ("INFO", "kamiyo configured"),
    ]
    assert [m for level, m in shown if m.startswith("Running upgrade  -> 0001")] == [MIGRATION_0001]


def test_a_one_off_command_still_shows_warnings(demo_env):
    # The demo's emulator is not running: each failed attempt warns before it is retried.
    env = {**demo_env, "STRIPE_API_BASE": "http://127.0.0.1:9", "STRIPE_RETRY_MIN_WAIT": "0.01",
           "STRIPE_RETRY_MAX_WAIT": "0.01"}
    del env["STRIPE_API_VERSION"]  # the library's own: no mismatch to warn of
    done = flask(env, "stripe-version", "check", "--json")
    assert json.loads(done.stdout)["observed"]["webhook_endpoints"]["reason"] == "error: APIConnectionError"
    assert messages(done.stderr) == [
        ("WARNING", "Stripe webhook_endpoint.list attempt 1 failed with APIConnectionError; retrying in 0.01 s"),
        ("WARNING", "Stripe webhook_endpoint.list attempt 2 failed with APIConnectionError; retrying in 0.01 s"),
        ("WARNING", "version check: listing webhook endpoints failed: APIConnectionError"),
    ]


def test_where_the_level_comes_from():
    assert kamiyo_logging.one_off_command() is False  # gunicorn, tests, python -c: no click context
    with click.Context(run_command):
        assert kamiyo_logging.one_off_command() is False  # `flask run` serves
    with click.Context(click.Command("list")):
        assert kamiyo_logging.one_off_command() is True


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_held_back_lines_come_out_in_order_when_asked_for(restore_root):
    stream = io.StringIO()
    kamiyo_logging.configure_logging("INFO", stream=stream, one_off=True)
    log = logging.getLogger("kamiyo.test")
    log.info("first")
    log.warning("second")
    log.debug("never: below LOG_LEVEL")
    assert messages(stream.getvalue()) == [("WARNING", "second")]
    kamiyo_logging.log_verbosely()
    log.info("third")
    assert messages(stream.getvalue()) == [("WARNING", "second"), ("INFO", "first"), ("INFO", "third")]


def test_a_service_command_logs_at_log_level(restore_root):
    stream = io.StringIO()
    kamiyo_logging.configure_logging("WARNING", stream=stream, one_off=True)
    logging.getLogger("kamiyo.test").info("held, and dropped: below LOG_LEVEL")
    kamiyo_logging.log_as_service()
    logging.getLogger("kamiyo.test").info("still below LOG_LEVEL")
    logging.getLogger("kamiyo.test").warning("shown")
    assert messages(stream.getvalue()) == [("WARNING", "shown")]


def test_a_service_command_with_verbose_stays_verbose(restore_root):
    stream = io.StringIO()
    kamiyo_logging.configure_logging("WARNING", stream=stream, one_off=True)
    kamiyo_logging.log_verbosely()  # --verbose is read before the command's body runs
    kamiyo_logging.log_as_service()
    logging.getLogger("kamiyo.test").info("shown: asked for")
    assert messages(stream.getvalue()) == [("INFO", "shown: asked for")]
