"""The dashboard login's per-account limit counts per account *and* client (IPv4 address,
IPv6 /64): wrong passwords sent from elsewhere cannot lock the account's owner out. Across
clients the account has a higher ceiling; past it a client that has failed on the account is
answered 429 before its password is checked, and one with no failures still gets its try.
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.support import DASHBOARD_PASSWORD, csrf_token, make_user

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

ADMIN = "admin@example.com"


def _attempt(client, email: str, password: str, ip: str):
    page = client.get("/login", environ_base={"REMOTE_ADDR": ip}).get_data(as_text=True)
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf_token(page)},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_wrong_passwords_from_elsewhere_do_not_lock_the_admin_out(app):
    make_user(app, ADMIN, "admin")
    attacker = app.test_client()
    for n in range(5):
        assert _attempt(attacker, ADMIN, f"guess-{n}-wrong-pass", "198.51.100.66").status_code == 401
    assert _attempt(attacker, ADMIN, "guess-6-wrong-pass", "198.51.100.66").status_code == 429
    admin = app.test_client()
    answer = _attempt(admin, ADMIN, DASHBOARD_PASSWORD, "203.0.113.10")
    assert answer.status_code == 302, f"the admin, right password, own IP, is answered {answer.status_code}"


def test_one_ipv6_client_counts_as_one_across_its_64(app):
    make_user(app, ADMIN, "admin")
    network = ipaddress.ip_network("2001:db8:5:9::/64")
    client = app.test_client()
    answers = [_attempt(client, ADMIN, "wrong-password-here", str(network[n * 977 + 1])).status_code for n in range(6)]
    assert answers == [401] * 5 + [429]


def test_past_the_ceiling_only_clients_without_failures_get_a_try(make_app):
    app = make_app(LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS="3/hour")
    make_user(app, ADMIN, "admin")
    client = app.test_client()
    for ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        assert _attempt(client, ADMIN, "wrong-password-here", ip).status_code == 401
    # Over the ceiling: a client that failed is refused before its password is checked,
    # even the right one, so it cannot tell a hit.
    assert _attempt(client, ADMIN, DASHBOARD_PASSWORD, "198.51.100.1").status_code == 429
    # A new client gets one try, then is refused like the others.
    assert _attempt(client, ADMIN, "wrong-password-here", "198.51.100.4").status_code == 401
    assert _attempt(client, ADMIN, "wrong-password-again", "198.51.100.4").status_code == 429
    # The owner, from a client with no failures, signs in.
    assert _attempt(app.test_client(), ADMIN, DASHBOARD_PASSWORD, "203.0.113.10").status_code == 302
    # Another account is not concerned.
    make_user(app, "other@example.com", "viewer")
    assert _attempt(client, "other@example.com", DASHBOARD_PASSWORD, "198.51.100.1").status_code == 302
