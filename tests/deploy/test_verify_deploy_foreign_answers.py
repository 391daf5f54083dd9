"""`flask --app wsgi verify-deploy` asked about one service, answered by something else.

A --url whose proxy redirects (a canonical-host rule, an http->https rule pointing at the load
balancer, a maintenance redirect) must not be reported healthy from another host's answer; an
HTML page or an empty JSON answer is not a customer; a raw traceback in the log is an error."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def _serve(handler_class) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def elsewhere():
    """Another host, healthy: the previous release, say."""

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server, url = _serve(Healthy)
    yield url.replace("127.0.0.1", "localhost")  # another host name
    server.shutdown()


@pytest.fixture
def redirecting(elsewhere):
    """The URL verify-deploy was given: it answers nothing itself, only redirects."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(301)
            self.send_header("Location", elsewhere + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server, url = _serve(Redirect)
    yield url
    server.shutdown()


def test_health_answered_by_another_host_after_a_redirect_is_not_ok(make_app, redirecting, elsewhere):
    app = make_app()
    result = app.test_cli_runner().invoke(args=["verify-deploy", "--url", redirecting])
    health = [line for line in result.output.splitlines() if line.startswith("[") and "health:" in line]
    assert health, result.output
    assert not any(line.startswith("[ok  ]") for line in health), (
        f"verify-deploy --url {redirecting} reported health from {elsewhere}:\n{result.output}"
    )
    assert result.exit_code == 2, result.output


@pytest.fixture
def html_everywhere():
    """A front that answers 200 with an HTML page to everything (a maintenance page, an SPA
    fallback, a captive portal)."""

    class Page(BaseHTTPRequestHandler):
        def _page(self):
            body = b"<html><body>We'll be right back</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _page

        def log_message(self, *args):
            pass

    server, url = _serve(Page)
    yield url
    server.shutdown()


def test_a_200_html_answer_to_the_idempotency_probe_is_a_failure_not_a_traceback_with_exit_1(
    html_everywhere, isolated_environment
):
    """The probe reads both answers as JSON unguarded: the command dies with a traceback and
    Python's exit 1, which the pipeline reads as "warnings only", though health failed."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kamiyo.config import DEFAULTS
    from tests.support import ROOT, TEST_SECRETS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment))
    done = subprocess.run(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", "verify-deploy", "--url", html_everywhere,
         "--api-key", "kmy_test_probe_key"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr[-800:]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-300:])


def test_the_idempotency_probe_needs_a_customer_in_the_answers():
    """Two 200 answers without any customer in them ({}: a stub, a proxy's canned answer)
    pass as "one customer (None)": None equals None."""
    import requests

    from kamiyo.release.verify import check_idempotency

    class Empty(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server, url = _serve(Empty)
    try:
        with requests.Session() as session:
            check = check_idempotency(session, url, "kmy_test_probe_key", "test")
    finally:
        server.shutdown()
    assert check.status != "ok", check


def test_a_raw_traceback_after_the_release_is_not_reported_as_no_error(tmp_path):
    """What the service writes to its log that is not one of its JSON lines: an uncaught
    exception in a thread (Python prints it to stderr, no level, no timestamp; nothing installs
    threading.excepthook), a crash of a C extension. verify-deploy reads such lines as neither
    time nor level and says "no ERROR or CRITICAL line since" the release."""
    from kamiyo.release.verify import check_log

    log = tmp_path / "web.log"
    log.write_text(
        '{"timestamp": "2026-12-06T05:00:00.000Z", "level": "INFO", "logger": "kamiyo.versioning", '
        '"message": "[STRIPE VERSION] Healthy: API version 2026-10-28.endive is 39 days old."}\n'
        'Exception in thread Thread-3 (_retry_postgresql):\n'
        'Traceback (most recent call last):\n'
        '  File "/usr/lib/python3.11/threading.py", line 1045, in _bootstrap_inner\n'
        '    self.run()\n'
        'psycopg.errors.InsufficientPrivilege: permission denied for database kamiyo\n'
        '{"timestamp": "2026-12-06T05:00:05.000Z", "level": "INFO", "logger": "gunicorn.access", '
        '"message": "GET /health 200"}\n'
    )
    [_, errors] = check_log(log, None)
    assert errors.status != "ok", errors
