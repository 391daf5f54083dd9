"""`flask --app wsgi preflight` against what a real host gets wrong: a database that never
answers, a mistyped SQLite path, settings create_app would trip on, a Redis password with an
@, a configuration error beside secrets that are set, a Date header without a zone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kamiyo.config import DEFAULTS
from tests.support import ROOT, closed_port_url

SECRETS = {
    "SECRET_KEY": "k" * 40,
    "STRIPE_SECRET_KEY": "sk_test_preflight4242abcd",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_preflight4242abcd",
    "STRIPE_WEBHOOK_SECRET": "whsec_preflightsecretone",
}


@pytest.fixture
def blackhole():
    """A TCP port that accepts connections (the kernel completes the handshake) and never says
    a word: a firewall that drops, a hung server, a half-dead failover address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


def preflight(instance: Path, timeout: float, *args: str,
              **settings: str) -> tuple[subprocess.CompletedProcess | None, float]:
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(SECRETS, KAMIYO_INSTANCE_PATH=str(instance), STRIPE_API_BASE=closed_port_url(), **settings)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [Path(sys.executable).with_name("flask"), "--app", "wsgi", "preflight", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - started
    return done, time.monotonic() - started


def test_a_postgresql_that_never_answers_fails_the_database_check_instead_of_hanging(blackhole, isolated_environment):
    """Stripe and Redis that never answer are bounded (the health client's timeout, Redis's
    0.5 s); the database is not: psycopg waits for the server's first byte for ever, and the
    release pipeline waits with it, with nothing printed."""
    done, took = preflight(
        isolated_environment, 45, DATABASE_URL=f"postgresql://kamiyo:s3cretpw@127.0.0.1:{blackhole}/kamiyo"
    )
    assert done is not None, f"preflight still had not answered after {took:.0f} s (the database never answers)"
    assert done.returncode == 2, done.stdout + done.stderr
    assert "[FAIL] database" in done.stdout
    assert "s3cretpw" not in done.stdout + done.stderr


def test_preflight_does_not_create_a_database_at_a_mistyped_sqlite_path(isolated_environment, tmp_path):
    """A check run before a release must change nothing: with DATABASE_URL pointing at a path
    where there is no database (a typo, a missing volume), preflight creates an empty SQLite
    file there and says the database is reachable (then migrations: a warning only), where
    it should fail the database check."""
    typo = tmp_path / "kamiyo-typo.db"
    done, _ = preflight(isolated_environment, 60, DATABASE_URL=f"sqlite:///{typo}")
    assert done is not None
    assert not typo.exists(), f"preflight created {typo}: {done.stdout}"
    assert "[FAIL] database" in done.stdout, done.stdout


def test_on_a_first_install_a_missing_database_is_a_warning_and_still_not_made(isolated_environment, tmp_path):
    """release.sh's first release runs preflight before the migration that makes the database."""
    new = tmp_path / "kamiyo.db"
    done, _ = preflight(isolated_environment, 60, "--new-database", DATABASE_URL=f"sqlite:///{new}")
    assert done is not None
    assert not new.exists(), f"preflight created {new}: {done.stdout}"
    assert f"[WARN] database: no SQLite database yet at {new}" in done.stdout, done.stdout
    assert "[FAIL]" not in done.stdout.replace("[FAIL] stripe", ""), done.stdout


@pytest.mark.parametrize("url", [
    "postgresql://kamiyo:s3cretpw@127.0.0.1:notaport/kamiyo",  # a port mistyped
    " postgresql://kamiyo:s3cretpw@127.0.0.1/kamiyo",  # `DATABASE_URL= postgresql://...` in an env file
])
@pytest.mark.parametrize("command", [["preflight"], ["report", "--since", "1h"]])
def test_an_ill_formed_database_url_is_a_failure_with_exit_2_not_a_traceback_with_exit_1(
    isolated_environment, url, command
):
    """The release commands turn a configuration error into a failed check and exit 2; a
    DATABASE_URL SQLAlchemy cannot parse escapes that (ArgumentError / ValueError at
    create_app): a traceback and Python's exit 1, which a pipeline reads as warnings only."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment), STRIPE_API_BASE=closed_port_url(),
               DATABASE_URL=url)
    done = subprocess.run(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", *command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "s3cretpw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-300:])


@pytest.mark.parametrize("password", ["s3cret@Tail9", "s3cret:x@Tail9"])
def test_a_redis_password_with_an_at_sign_is_not_shown(make_app, password):
    """redis-py takes `redis://:p@ss@host` (the last @ ends the user part); preflight's mask
    stops at the first @ and prints the rest of the password."""
    from tests.support import free_port

    app = make_app(**SECRETS, REDIS_URL=f"redis://default:{password}@127.0.0.1:{free_port()}/0")
    result = app.test_cli_runner().invoke(args=["preflight"])
    [line] = [line for line in result.output.splitlines() if "] redis:" in line]
    assert "Tail9" not in result.output, line


def _preflight_with(instance: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(SECRETS, KAMIYO_INSTANCE_PATH=str(instance), STRIPE_API_BASE=closed_port_url(), **settings)
    return subprocess.run(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", "preflight"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("setting", [
    {"WEB_CONCURRENCY": ""},  # `WEB_CONCURRENCY=` left empty in the env file
    {"WEB_CONCURRENCY": "auto"},
    {"LOG_LEVEL": "verbose"},
    {"REDIS_URL": " "},
    {"REDIS_URL": "redis://127.0.0.1:notaport/0"},
    {"RATELIMIT_STORAGE_URI": "redis:/127.0.0.1:6379"},  # one slash short
    {"DATABASE_URL": "mysql://kamiyo:s3cretpw@db.internal/kamiyo"},
], ids=lambda s: "-".join(f"{k}={v!r}" for k, v in s.items()))
def test_an_odd_setting_is_a_failed_check_with_exit_2_not_a_traceback(isolated_environment, setting):
    """Settings the configuration does not validate but create_app trips on (rate_limits'
    int(WEB_CONCURRENCY), the log level, Flask-Limiter's storage URL, a dialect not installed):
    a traceback and exit 1, which a release pipeline reads as warnings only."""
    done = _preflight_with(isolated_environment, **setting)
    assert "s3cretpw" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode == 2 and "[FAIL]" in done.stdout, (done.returncode, done.stdout, done.stderr[-300:])


def test_a_configuration_error_does_not_report_the_secrets_that_are_set_as_missing(isolated_environment):
    """BACKUP_KEEP= (empty) stops the configuration; preflight then checks the secrets without
    the app, but from_environment raised on the empty number before reading any of them, so
    every secret that is set is reported "not set": on-call goes after four false failures."""
    done = _preflight_with(isolated_environment, BACKUP_KEEP="")
    assert done.returncode == 2
    assert "BACKUP_KEEP" in done.stdout, done.stdout
    assert "not set" not in done.stdout, done.stdout


def test_a_date_header_without_a_zone_is_a_warning_not_a_crash(make_app):
    """An answer whose Date has no zone or `-0000` (an egress proxy in front of Stripe that
    rewrites it: RFC 5322's "unknown zone"): email.utils gives a naive time, check_clock
    subtracts it from an aware one, and preflight dies with a TypeError traceback."""
    import json as json_module
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Stripe(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json_module.dumps({"object": "list", "data": [], "has_more": False,
                                      "url": self.path.split("?")[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Date", time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime()))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    Stripe.date_time_string = lambda self, timestamp=None: time.strftime(  # type: ignore[method-assign]
        "%a, %d %b %Y %H:%M:%S -0000", time.gmtime())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stripe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = make_app(**SECRETS, STRIPE_API_BASE=f"http://127.0.0.1:{server.server_address[1]}",
                       STRIPE_HEALTH_TIMEOUT_SECONDS=5.0)
        result = app.test_cli_runner().invoke(args=["preflight"])
    finally:
        server.shutdown()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "] clock:" in result.output, result.output


@pytest.mark.parametrize("setting", [
    {"LOG_LEVEL": "verbose"},
    {"DATABASE_URL": "postgresql://kamiyo:s3cretpw@127.0.0.1:notaport/kamiyo"},
    {"REDIS_URL": "redis://:s3cretpw@127.0.0.1:notaport/0"},
], ids=lambda s: next(iter(s)))
def test_the_service_refuses_such_a_setting_in_one_line_too(isolated_environment, setting):
    """Any other command (and the service, through create_app) stops with one line naming the
    setting, without its value's password."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment), **setting)
    done = subprocess.run(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", "api-keys", "list"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith(f"kamiyo: configuration error: {next(iter(setting))} "), line
    assert "s3cretpw" not in line
