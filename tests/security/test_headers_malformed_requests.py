"""Answers to malformed requests carry X-Content-Type-Options: nosniff, through the proxy.

The app adds nosniff in Flask's after_request. gunicorn answers some requests itself, before
the app sees them (an invalid header name, a bad request line, a header too large, too many
headers): it writes those 400/431 answers in gunicorn.util.write_error, with a fixed set of
headers (Connection, Content-Type, Content-Length), and offers no setting or server hook to
add one; only replacing its worker's error handling would. So gunicorn's own answers cannot
carry nosniff, and the README requires nginx in front (deploy/nginx/kamiyo.conf). The sample
adds nosniff to every answer, nginx's own errors and gunicorn's included, once each.

The first check, sent straight to gunicorn, documents the gap (and fails the day gunicorn
adds the header itself, when the proxy's copy can be reconsidered); the others go through the
sample, started as tests/deploy/test_nginx.py starts it.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.deploy.test_nginx import stack, tls  # noqa: F401 -- fixtures: nginx (the sample) in front of gunicorn

pytestmark = pytest.mark.slow

MALFORMED = {
    "invalid-header-name": b"GET /health HTTP/1.1\r\nHost: x\r\nBad<script>Name: 1\r\n\r\n",
    "bad-version": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "header-too-large": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    # Within nginx's limits, past gunicorn's (limit_request_line 4094, limit_request_fields 100):
    # nginx passes them on and gunicorn answers them itself (414, 431), through nginx.
    "request-line-too-long": b"GET /health?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "too-many-headers": b"GET /health HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-N%d: 1\r\n" % n for n in range(120))
    + b"\r\n",
}


def raw(url: str, data: bytes, cert: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """The status line and headers of the answer to `data`, sent as it is."""
    host, port = url.split("://")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        sock = ssl.create_default_context(cafile=cert).wrap_socket(plain, server_hostname=host) if cert else plain
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
    status, *lines = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return status, [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]


def test_gunicorns_own_error_answers_lack_nosniff_which_is_why_the_proxy_is_required(stack):  # noqa: F811
    status, headers = raw(stack["direct"], MALFORMED["bad-version"])
    assert status.startswith("HTTP/1.1 400"), status
    assert "x-content-type-options" not in dict(headers), (
        "gunicorn now sets nosniff on its own errors: the proxy's copy may be redundant"
    )


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
def test_answers_to_malformed_requests_carry_nosniff_once_through_the_proxy(stack, request_bytes):  # noqa: F811
    status, headers = raw(stack["proxied"], request_bytes, stack["cert"])
    assert status.startswith("HTTP/1.1 "), status
    values = [value for name, value in headers if name == "x-content-type-options"]
    assert values == ["nosniff"], (status, headers)


def test_an_app_answer_carries_nosniff_once_through_the_proxy(stack):  # noqa: F811
    status, headers = raw(stack["proxied"], b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                          stack["cert"])
    assert status.startswith("HTTP/1.1 200"), status
    assert [value for name, value in headers if name == "x-content-type-options"] == ["nosniff"], headers
