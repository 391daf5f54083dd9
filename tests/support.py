"""Helpers shared by tests (import as `from tests.support import ...`)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}"
