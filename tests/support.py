"""Helpers shared by tests (import as `from tests.support import ...`)."""

from __future__ import annotations

import socket
import time

import pytest

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
