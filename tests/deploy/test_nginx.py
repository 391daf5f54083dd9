"""deploy/nginx/kamiyo.conf: nginx accepts it (`nginx -t`, Debian's nginx: `make test` installs
it), and in front of a real gunicorn it passes a signed webhook through untouched and keeps
/health answering while slow clients trickle their bodies (gunicorn alone does not)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from kamiyo.config import DEFAULTS
from tests.support import free_port, gunicorn
from tests.webhooks.stripe_signing import customer, make_event, signed

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "nginx" / "kamiyo.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(found, os.X_OK):
        pytest.fail("nginx is not installed: run `make test` (it installs Debian's nginx package)")
    return found


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    return cert, key


def configure(prefix: Path, tls: tuple[Path, Path], upstream_port: int = 8000) -> tuple[Path, int]:
    """The sample with its host paths and ports swapped for the test's, inside a minimal
    nginx.conf; returns that file and the HTTPS port."""
    https_port, http_port = free_port(), free_port()
    text = SAMPLE.read_text()
    swaps = {
        "/etc/ssl/certs/kamiyo.pem": str(tls[0]),
        "/etc/ssl/private/kamiyo.key": str(tls[1]),
        "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen [::]:443 ssl http2;": "",
        "listen [::]:80;": "",
    }
    for old, new in swaps.items():
        assert old in text, f"deploy/nginx/kamiyo.conf no longer has {old!r}: update this test"
        text = text.replace(old, new)
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "kamiyo.conf").write_text(text)
    # Running as root, nginx's workers would otherwise be `nobody`, who cannot read the test's files.
    user = "user root;" if os.geteuid() == 0 else ""
    main = prefix / "nginx.conf"
    main.write_text(f"""
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/kamiyo.conf;
}}
""")
    return main, https_port


def nginx_test(main: Path) -> subprocess.CompletedProcess:
    prefix = main.parent
    return subprocess.run([nginx_binary(), "-t", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(main)],
                          capture_output=True, text=True, timeout=30)


def test_nginx_accepts_the_sample(tmp_path, tls):
    done = nginx_test(configure(tmp_path / "nginx", tls)[0])
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr


def test_nginx_test_catches_a_broken_sample(tmp_path, tls):
    main, _ = configure(tmp_path / "nginx", tls)
    conf = main.parent / "kamiyo.conf"
    conf.write_text(conf.read_text().replace("proxy_request_buffering on;", "proxy_request_buffering sometimes;"))
    done = nginx_test(main)
    assert done.returncode != 0 and "proxy_request_buffering" in done.stderr


def directive(name: str) -> list[str]:
    return re.findall(rf"^\s*{re.escape(name)}\s+(.+);\s*(?:#.*)?$", SAMPLE.read_text(), re.MULTILINE)


def test_the_sample_buffers_times_out_slow_clients_and_sets_hsts():
    assert directive("proxy_request_buffering") == ["on"]
    for name in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert len(directive(name)) == 1, name
    assert directive("add_header") == ['Strict-Transport-Security "max-age=63072000; includeSubDomains" always',
                                       "X-Content-Type-Options nosniff always"]
    assert directive("proxy_hide_header") == ["X-Content-Type-Options"]  # once per answer, not twice
    # One hop, overwritten: what TRUSTED_PROXY_COUNT=1 reads.
    assert "X-Forwarded-For $remote_addr" in directive("proxy_set_header")
    assert directive("server") == ["127.0.0.1:8000"]  # gunicorn on loopback only


def test_the_body_limit_is_the_apps():
    (limit,) = directive("client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", limit).groups()
    size = int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]
    assert size == DEFAULTS["MAX_CONTENT_LENGTH"]


# --- live: nginx in front of gunicorn ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tls):
    """gunicorn (two workers x 8 threads, as `make run`) with nginx in front; both URLs."""
    instance = tmp_path_factory.mktemp("instance")
    database = "sqlite:///" + str(instance / "kamiyo.db")
    with gunicorn(instance, database, TRUSTED_PROXY_COUNT="1", WEBHOOK_RATE_LIMIT="5/minute") as direct:
        upstream_port = int(direct.rsplit(":", 1)[1])
        main, https_port = configure(tmp_path_factory.mktemp("nginx"), tls, upstream_port)
        proc = subprocess.Popen([nginx_binary(), "-p", str(main.parent), "-e", str(main.parent / "error.log"),
                                 "-c", str(main), "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxied = f"https://127.0.0.1:{https_port}"
        try:
            deadline = time.monotonic() + 15
            while True:
                assert proc.poll() is None, (main.parent / "error.log").read_text()
                with contextlib.suppress(requests.RequestException):
                    if requests.get(proxied + "/health", verify=str(tls[0]), timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
            yield {"direct": direct, "proxied": proxied, "cert": str(tls[0]), "instance": instance}
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.mark.slow
def test_a_signed_webhook_verifies_through_the_proxy(stack):
    body, headers = signed(make_event("customer.created", customer("cus_via_nginx", user_id="nginx-1")))
    answer = requests.post(stack["proxied"] + "/api/v1/webhooks/stripe", data=body, headers=headers,
                           verify=stack["cert"], timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "processed"}
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    # The same bytes, one byte changed, are refused: the signature really was checked.
    tampered = body.replace(b"cus_via_nginx", b"cus_via_nginY")
    refused = requests.post(stack["proxied"] + "/api/v1/webhooks/stripe", data=tampered, headers=headers,
                            verify=stack["cert"], timeout=10)
    assert refused.status_code == 400


@pytest.mark.slow
def test_a_body_over_the_limit_stops_at_the_proxy(stack):
    answer = requests.post(stack["proxied"] + "/api/v1/webhooks/stripe", data=b"x" * (DEFAULTS["MAX_CONTENT_LENGTH"] + 1),
                           verify=stack["cert"], timeout=10)
    assert answer.status_code == 413


@pytest.mark.slow
def test_the_client_address_is_the_one_nginx_saw_not_one_the_client_wrote(stack):
    """X-Forwarded-For as the sample sets it, read by TRUSTED_PROXY_COUNT=1: the rate limit and
    its record name the address the client connected from (127.0.0.2 here), and a forged
    X-Forwarded-For, new at each request, neither escapes the limit nor lands in the record."""
    import http.client
    import sqlite3

    host, port = stack["proxied"].removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=stack["cert"])
    codes = []
    for n in range(15):  # 5/minute, counted per worker (2 workers, no Redis): a 429 by the 11th
        conn = http.client.HTTPSConnection(host, int(port), context=context, source_address=("127.0.0.2", 0),
                                           timeout=10)
        conn.request("POST", "/api/v1/webhooks/stripe", body=b"{}",
                     headers={"X-Forwarded-For": f"203.0.113.{n}", "Stripe-Signature": "t=1,v1=00"})
        codes.append(conn.getresponse().status)
        conn.close()
    assert 429 in codes and set(codes) <= {400, 429}, codes

    def recorded() -> set[str]:
        with contextlib.closing(sqlite3.connect(stack["instance"] / "kamiyo.db")) as db:
            return {ip for (ip,) in db.execute("SELECT DISTINCT client_ip FROM rate_limit_violations")}

    deadline = time.monotonic() + 10
    while not recorded() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert recorded() == {"127.0.0.2"}


def trickle(url: str, cert: str | None, stop: threading.Event, opened: list) -> None:
    """One client sending a webhook body a byte every half second until told to stop."""
    host, port = url.split("://")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    if cert:
        sock = ssl.create_default_context(cafile=cert).wrap_socket(sock, server_hostname=host)
    opened.append(sock)
    with contextlib.suppress(OSError):
        sock.sendall(f"POST /api/v1/webhooks/stripe HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Stripe-Signature: t=1,v1=00\r\nContent-Length: 10000\r\n\r\n{{".encode())
        while not stop.wait(0.5):
            sock.sendall(b" ")


def health_under_trickle(url: str, cert: str | None, seconds: float = 5.0) -> list[str]:
    """/health's answers, each allowed 2 s, while 16 slow clients trickle their bodies."""
    stop, opened = threading.Event(), []
    clients = [threading.Thread(target=trickle, args=(url, cert, stop, opened), daemon=True) for _ in range(16)]
    for client in clients:
        client.start()
    time.sleep(1.0)  # every slow client is connected and has sent its headers
    answers = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                answers.append(str(requests.get(url + "/health", verify=cert or True, timeout=2).status_code))
            except requests.RequestException as exc:
                answers.append(type(exc).__name__)
            time.sleep(0.2)
    finally:
        stop.set()
        for sock in opened:
            with contextlib.suppress(OSError):
                sock.close()
        for client in clients:
            client.join(timeout=5)
    return answers


@pytest.mark.slow
def test_slow_clients_do_not_starve_health_behind_the_proxy(stack):
    """Issue 16, finding 8: 16 connections trickling a body hold every gunicorn thread of
    `make run` (2 workers x 8), and /health times out; through nginx it keeps answering."""
    # Straight to gunicorn, a /health that lands on a worker whose threads are all held waits
    # past its 2 s (which worker takes a connection is the kernel's choice, so not every one).
    direct = health_under_trickle(stack["direct"], None)
    assert set(direct) != {"200"}, f"the slow clients did not hold gunicorn's threads: {direct}"
    proxied = health_under_trickle(stack["proxied"], stack["cert"])
    assert set(proxied) == {"200"}, proxied
    assert json.loads(requests.get(stack["proxied"] + "/health", verify=stack["cert"], timeout=5).text)
