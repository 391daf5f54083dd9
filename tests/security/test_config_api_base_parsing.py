"""STRIPE_API_BASE's loopback check sees the host the HTTP client sends to.

urllib.parse and requests/urllib3 read some URLs differently: urllib3 ends the authority at
a backslash (as browsers do), urllib.parse does not. `http://OTHER\\@127.0.0.1` was "loopback"
to a urlsplit-only check and OTHER to the HTTP client, which then sent the secret key there
in clear text. The check now refuses backslashes, user info and unusual characters, and
refuses a URL whose two readings of the host disagree.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from kamiyo.config import ConfigError


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (the UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


class _Capture(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self):
        _Capture.seen.append(self.headers.get("Authorization", ""))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_backslash_in_stripe_api_base_cannot_send_the_secret_key_to_another_host(make_app):
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    server = HTTPServer((address, 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Capture.seen.clear()
    url = f"http://{address}:{server.server_port}\\@127.0.0.1:1"
    try:
        try:
            app = make_app(STRIPE_API_BASE=url, STRIPE_HEALTH_CACHE_SECONDS=0)
        except ConfigError:
            return  # refused, as it must be
        # Accepted: show where the key goes (the anonymous health route probes Stripe).
        app.test_client().get("/api/v1/payments/health")
        leaked = [value for value in _Capture.seen if "sk_test_kamiyo_tests" in value]
        pytest.fail(
            f"STRIPE_API_BASE {url!r} was accepted as loopback; the secret key then reached "
            f"{address} over plain http: {bool(leaked)} ({len(_Capture.seen)} request(s) seen)"
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5\\@127.0.0.1:8420",
        "http://10.0.0.5:80\\@localhost",
        "http://stripe.example.com\\@[::1]:8420",
    ],
)
def test_stripe_api_base_whose_http_client_host_is_not_loopback_is_refused(make_app, url):
    import requests
    from urllib3.util import parse_url

    # What the check believes and what the client does disagree:
    assert parse_url(requests.Request("GET", url + "/v1/customers").prepare().url).host not in (
        "127.0.0.1", "localhost", "[::1]", "::1"
    )
    with pytest.raises(ConfigError, match="STRIPE_API_BASE"):
        make_app(STRIPE_API_BASE=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@127.0.0.1:8420",
        "http://10.0.0.5@127.0.0.1:8420",
        "https://attacker.example@api.stripe.com",
        "http://127.0.0.1:8420\\@10.0.0.5",
        "http://127.0.0.1:8420/ x",
        "http://127.0.0.1:8420/\tx",
        "http://127.0.0.1:8420/\u00e9",
    ],
)
def test_user_info_and_unusual_characters_in_stripe_api_base_are_refused(make_app, url):
    with pytest.raises(ConfigError, match="STRIPE_API_BASE"):
        make_app(STRIPE_API_BASE=url)
