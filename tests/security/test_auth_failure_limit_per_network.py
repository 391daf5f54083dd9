"""The per-IP limit on failed authentication and its alert count an IPv6 client per /64; the
shared metrics token answers 429 past the limit even when right, and must be 16+ characters.

Why per /64: a single IPv6 client (any home or cloud connection) holds a whole /64, 2^64
addresses. Counted per address, each new one would start a fresh count (key guessing never
slowed) and each one over the limit a new alert (as many Slack alerts as an attacker likes).
"""

from __future__ import annotations

import ipaddress

import pytest
from sqlalchemy import func, select

from kamiyo.extensions import db
from kamiyo.models import AlertSent

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

PAYMENTS = "/api/v1/payments"
BAD_KEY = {"Authorization": "Bearer kmy_guessed-0123456789"}
NETWORK = ipaddress.ip_network("2001:db8:77:1::/64")


def address(n: int) -> str:
    return str(NETWORK[n * 7919 + 1])


@pytest.fixture
def limited(make_app):
    return make_app(AUTH_FAILURE_RATE_LIMIT="3/minute")


def test_one_ipv6_client_rotating_through_its_64_meets_the_limit(limited):
    client = limited.test_client()
    answers = [
        client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": address(n)}).status_code
        for n in range(12)
    ]
    assert 429 in answers, f"12 refused keys from one /64 under a 3/minute limit: {answers}"


def test_one_ipv6_client_raises_one_alert_not_one_per_address(limited):
    client = limited.test_client()
    for n in range(5):
        for _ in range(4):  # one over the limit, from each address
            client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": address(n)})
    with limited.app_context():
        alerts = db.session.scalar(
            select(func.count()).select_from(AlertSent).where(AlertSent.dedup_key.like("auth-failures:%"))
        )
    assert alerts <= 1, f"one client in one /64 raised {alerts} auth-failure alerts in the hour"


def test_an_ip_over_the_limit_cannot_go_on_guessing_the_metrics_token(make_app):
    """Refusals are counted, but a right guess is checked before the limit and always passes:
    past the limit a guesser still tells a right guess (200) from a wrong one (429), at full
    speed. API keys have 256 random bits; METRICS_TOKEN is whatever the operator typed
    (no length or strength is asked for), so a dictionary finds it."""
    app = make_app(AUTH_FAILURE_RATE_LIMIT="3/minute", METRICS_TOKEN="prometheus1")
    client = app.test_client()
    dictionary = [f"prometheus{n}" for n in range(2, 40)] + ["prometheus1"]
    answers = {
        guess: client.get("/metrics", headers={"Authorization": f"Bearer {guess}"}).status_code for guess in dictionary
    }
    assert 429 in answers.values()  # the limit was met early on
    found = [guess for guess, status in answers.items() if status == 200]
    assert not found, f"{len(dictionary)} guesses from one IP over a 3/minute limit found the token: {found}"


def test_a_valid_api_key_still_passes_from_a_network_over_the_limit(limited):
    """The strictness is for the shared metrics token only: a key never meets the limit."""
    from tests.support import make_key

    client = limited.test_client()
    for n in range(4):
        client.get(f"{PAYMENTS}/customers", headers=BAD_KEY, environ_base={"REMOTE_ADDR": address(n)})
    answer = client.get(f"{PAYMENTS}/customers", headers=make_key(limited), environ_base={"REMOTE_ADDR": address(9)})
    assert answer.status_code == 200


def test_ipv4_clients_count_each_address_and_mapped_ipv6_as_its_ipv4():
    from kamiyo.auth_failures import client_bucket

    assert client_bucket("203.0.113.7") == "203.0.113.7"
    assert client_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_bucket("2001:db8:77:1:abcd::9") == "2001:db8:77:1::/64"
    assert client_bucket("-") == "-"


@pytest.mark.parametrize("token", ["prometheus1", "x" * 15])
def test_a_short_metrics_token_stops_start_up(token):
    from kamiyo.config import DEFAULTS, ConfigError, finalise
    from tests.support import TEST_SECRETS

    with pytest.raises(ConfigError, match=r"METRICS_TOKEN is .* at least 16"):
        finalise({**DEFAULTS, **TEST_SECRETS, "METRICS_TOKEN": token}, "/nonexistent")


def test_a_metrics_token_of_16_characters_or_more_is_accepted():
    from kamiyo.config import DEFAULTS, finalise
    from tests.support import TEST_SECRETS

    config = {**DEFAULTS, **TEST_SECRETS, "METRICS_TOKEN": "x" * 16}
    finalise(config, "/nonexistent")
    assert config["METRICS_TOKEN"] == "x" * 16
