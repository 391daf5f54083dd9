"""Helpers shared by tests (import as `from tests.support import ...`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent

# The secrets every test app is configured with.
TEST_SECRETS = {
    "SECRET_KEY": "test-secret-key",
    "STRIPE_SECRET_KEY": "sk_test_kamiyo_tests",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_kamiyo_tests",
    "STRIPE_WEBHOOK_SECRET": "whsec_kamiyo_tests",
}


# Marks for the database a test runs on (see conftest.py): both, or PostgreSQL alone
# for what SQLite cannot show (row locks, concurrent writers, its query planner).
both_databases = pytest.mark.both_databases
postgresql_only = pytest.mark.parametrize("database", ["postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)  # in a module marked for both


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}"


def make_key(app) -> dict[str, str]:
    from kamiyo.api_keys import create_api_key

    with app.app_context():
        _, plaintext = create_api_key("tests")
    return {"Authorization": f"Bearer {plaintext}"}


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll until predicate() is truthy (returns it) or fail after timeout."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(interval)
    return value


# Payments tests: Stripe retries that do not slow a test down.
FAST_RETRIES = {"STRIPE_RETRY_MIN_WAIT": 0.01, "STRIPE_RETRY_MAX_WAIT": 0.02, "STRIPE_TIMEOUT_SECONDS": 5.0}
# A lease that runs out within a test: the longest Stripe step (3 x 0.45 s + backoff) still fits
# in it, as the configuration requires.
LEASE_SECONDS = 1.5
SHORT_LEASE = {**FAST_RETRIES, "STRIPE_TIMEOUT_SECONDS": 0.45, "OPERATION_LEASE_SECONDS": LEASE_SECONDS,
               "IDEMPOTENCY_WAIT_SECONDS": 0.2}


def assert_contract(proxy, contract) -> None:
    """Every request the gateway sent validates against Stripe's published OpenAPI spec."""
    problems = []
    for sent in proxy.requests:
        if sent.method == "POST":
            problems += [f"{sent.method} {sent.path}: {p}" for p in contract.validate(sent.method, sent.path, sent.form)]
    assert not problems, "requests that break Stripe's API contract:\n" + "\n".join(problems)


def stripe_customers_for(localstripe, user_id: str) -> list:
    return [c for c in localstripe.v1.customers.list(params={"limit": 100}).auto_paging_iter()
            if (c.to_dict().get("metadata") or {}).get("kamiyo_user_id") == user_id]


@contextlib.contextmanager
def gunicorn(instance: Path, database_url: str, **settings: str) -> Iterator[str]:
    """The production server (gunicorn.conf.py, two workers) on `database_url`, migrated; its URL."""
    with gunicorn_master(instance, database_url, **settings) as master:
        yield master.url


@dataclasses.dataclass
class GunicornMaster:
    """A running gunicorn master (`gunicorn_master`): its URL, process, instance folder and log."""

    url: str
    proc: subprocess.Popen
    instance: Path
    log: Path

    def logged(self) -> list[dict]:
        return logged(self.instance)

    def worker_pids(self) -> set[int]:
        """The master's live workers (its children), from /proc."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(pid) for pid in children.read_text().split()}


@contextlib.contextmanager
def gunicorn_master(instance: Path, database_url: str, root: Path = ROOT, migrate: bool = True,
                    args: tuple[str, ...] = (), **settings: str) -> Iterator[GunicornMaster]:
    """gunicorn as in production (`root`'s gunicorn.conf.py, two workers) on `database_url`,
    migrated unless told otherwise, in a process group of its own (a host of its own); waits
    until /health answers."""
    from kamiyo.config import DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(instance), DATABASE_URL=database_url,
               PORT=str(free_port()), WEB_CONCURRENCY="2", LOG_LEVEL="WARNING")
    env.update(settings)
    flask = Path(sys.executable).with_name("flask")
    if migrate:
        subprocess.run([flask, "--app", "wsgi", "db", "upgrade"], cwd=root, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log_path = instance / "gunicorn.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([Path(sys.executable).with_name("gunicorn"), *args, "-c", "gunicorn.conf.py", "wsgi:app"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield GunicornMaster(url, proc, instance, log_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def logged(instance: Path) -> list[dict]:
    """The JSON log lines of the server `gunicorn` started on `instance`."""
    return [json.loads(line) for line in (instance / "gunicorn.log").read_text().splitlines() if line.startswith("{")]


# --- the dashboard ---------------------------------------------------------------------

DASHBOARD_PASSWORD = "correct horse battery staple"


def make_user(app, email: str, role: str = "viewer", password: str = DASHBOARD_PASSWORD) -> None:
    from kamiyo import users

    with app.app_context():
        users.create_user(email, password, role)


def csrf_token(html: str) -> str:
    import re

    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client, email: str, password: str = DASHBOARD_PASSWORD, next_url: str | None = None):
    """Sign in through the form, as a browser does; returns the POST's response."""
    page = client.get("/login" + (f"?next={next_url}" if next_url else ""))
    data = {"email": email, "password": password, "csrf_token": csrf_token(page.get_data(as_text=True))}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data)
