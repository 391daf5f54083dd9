"""No side doors in the logs: the real service under gunicorn (two workers, gunicorn.conf.py),
with STRIPE_LOG=debug and gunicorn's access log on, is sent secrets in every place a client
controls, makes a Stripe call (the emulator proxy in front of localstripe) so that
stripe-python logs, and then every stream it wrote (gunicorn's stdout and stderr, which carry
the app's, gunicorn's and stripe's lines) is scanned: none of the secrets is in it."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import ROOT, TEST_SECRETS, free_port

pytestmark = pytest.mark.slow

# What a client might send. Random, so that a hit can only come from this run.
SK_LIVE = "sk_live_" + secrets.token_hex(12)
SK_TEST = "sk_test_" + secrets.token_hex(12)
RK_LIVE = "rk_live_" + secrets.token_hex(12)
WHSEC = "whsec_" + secrets.token_hex(16)
KMY = "kmy_" + secrets.token_urlsafe(32)
BEARER = "tok" + secrets.token_urlsafe(24)
METRICS_TOKEN = "metrics-" + secrets.token_hex(16)
VISA = "4242424242424242"
AMEX = "378282246310005"  # 15 digits
VISA_SPACED = "4000 0566 5566 5556"
# The service's own Stripe key: stripe-python would print it in its debug lines.
STRIPE_KEY = "sk_test_scan" + secrets.token_hex(12)
SECRETS = {
    "sk_live": SK_LIVE,
    "sk_test": SK_TEST,
    "rk_live": RK_LIVE,
    "whsec": WHSEC,
    "kmy": KMY,
    "bearer": BEARER,
    "metrics_token": METRICS_TOKEN,
    "visa": VISA,
    "amex": AMEX,
    "visa_spaced": VISA_SPACED,
    "stripe_key": STRIPE_KEY,
}
# Every client-side secret, once; a bearer token is only recognisable as one after "Bearer".
TEXT = " ".join(f"Bearer {v}" if k == "bearer" else v for k, v in SECRETS.items() if k != "stripe_key")


@pytest.fixture(scope="module")
def service(tmp_path_factory, stripe_proxy):
    """gunicorn as production runs it, on a migrated SQLite database, Stripe being the proxy."""
    instance = tmp_path_factory.mktemp("log-scan")
    from kamiyo.config import DEFAULTS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, STRIPE_SECRET_KEY=STRIPE_KEY, KAMIYO_INSTANCE_PATH=str(instance),
               DATABASE_URL=f"sqlite:///{instance}/kamiyo.db", PORT=str(free_port()), WEB_CONCURRENCY="2",
               LOG_LEVEL="INFO", STRIPE_API_BASE=stripe_proxy.url, METRICS_TOKEN=METRICS_TOKEN,
               STRIPE_LOG="debug", GUNICORN_ACCESS_LOG="1", PYTHONUNBUFFERED="1")
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    made = subprocess.run([bin_dir / "flask", "--app", "wsgi", "api-keys", "create", "log-scan"], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True)
    key = next(word for word in made.stdout.split() if word.startswith("kmy_"))
    out, err = instance / "stdout.log", instance / "stderr.log"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([bin_dir / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env,
                                stdout=stdout, stderr=stderr)
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, err.read_text()
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
        yield url, int(env["PORT"]), key, proc, out, err
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def raw(port: int, data: bytes) -> bytes:
    """Bytes no HTTP library would send (an invalid header name, a bad request line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_no_secret_a_client_sends_reaches_any_log(service):
    url, port, key, proc, out, err = service
    auth = {"Authorization": f"Bearer {key}"}
    # A Stripe call, with secrets in what goes to Stripe: stripe-python logs it (and, were
    # STRIPE_LOG obeyed, would print the request body to stderr).
    created = requests.post(url + "/api/v1/payments/customers", timeout=30, headers=auth,
                            json={"user_id": "scan-1", "email": "ada@example.com",
                                  "name": f"Ada {SK_LIVE} {KMY} Bearer {BEARER} {METRICS_TOKEN}"})
    assert created.status_code == 201, created.text
    # The same secrets in every place a client controls.
    for path in (f"/api/v1/payments/customers/{SK_LIVE}", f"/{KMY}/Bearer {BEARER}", f"/x/{WHSEC}/{VISA}/{AMEX}",
                 f"/{RK_LIVE}/{SK_TEST}/{METRICS_TOKEN}"):
        requests.get(url + path, timeout=10, headers={"User-Agent": TEXT})
    requests.get(url + "/api/v1/payments/customers", timeout=10,
                 params={"q": TEXT, "card": VISA, "amex": AMEX, "key": KMY, "token": METRICS_TOKEN})
    requests.get(url + "/metrics", timeout=10, headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
    requests.get(url + "/metrics", timeout=10, params={"token": METRICS_TOKEN})
    for authorization in (f"Bearer {BEARER}", f"Bearer {KMY}", f"Bearer {SK_LIVE}", f"Basic {BEARER}", KMY):
        requests.get(url + "/api/v1/payments/customers", timeout=10,
                     headers={"Authorization": authorization, "X-Api-Key": KMY, "X-Request-ID": KMY,
                              "X-Secret": TEXT, "User-Agent": TEXT})
    requests.post(url + "/api/v1/payments/customers", timeout=10, headers={**auth, "User-Agent": TEXT},
                  json={"user_id": SK_LIVE, "email": f"{KMY}@example.com", "name": TEXT,
                        "card": {"number": VISA, "cvc": "123"}, "amex": AMEX})
    requests.post(url + "/api/v1/payments/customers", timeout=10, headers=auth, data=TEXT)
    requests.post(url + "/api/v1/webhooks/stripe", timeout=10, data=json.dumps({"secret": TEXT}),
                  headers={"Stripe-Signature": f"t=1,v1={WHSEC}", "User-Agent": TEXT})
    requests.post(url + "/api/v1/payments/subscriptions", timeout=10, headers=auth,
                  json={"customer_id": created.json()["id"], "price_id": SK_LIVE, "tier": "pro",
                        "payment_method": VISA})
    # What only raw bytes can carry: gunicorn refuses these before the app sees them.
    answers = [
        raw(port, f"GET /health HTTP/1.1\r\nHost: x\r\n{SK_LIVE}@: 1\r\n\r\n".encode()),
        raw(port, f"GET /health HTTP/1.1\r\nHost: x\r\n{KMY} Bearer {BEARER}: 1\r\n\r\n".encode()),
        raw(port, f"GET /{SK_LIVE}/{KMY} HTTP/9.9\r\nHost: x\r\n\r\n".encode()),
        raw(port, f"G@T /{METRICS_TOKEN}/{VISA} HTTP/1.1\r\nHost: x\r\n\r\n".encode()),
        raw(port, f"GET /health HTTP/1.1\r\nHost: x\r\nX-A: {AMEX}\x01{WHSEC}\r\n\r\n".encode()),
    ]
    assert all(answer.startswith(b"HTTP/1.1 400") for answer in answers), answers
    time.sleep(0.5)  # the last lines are written after the answers
    proc.terminate()
    proc.wait(timeout=30)

    streams = {"stdout": out.read_text(), "stderr": err.read_text()}
    everything = "\n".join(streams.values())
    found = {(name, stream) for stream, text in streams.items() for name, secret in SECRETS.items()
             if secret in text or secret.replace(" ", "") in text}
    assert not found, f"secrets in the logs: {sorted(found)}\n{everything[-5000:]}"

    # The scan saw the lines it was meant to see: every stream's source wrote, redacted.
    lines = [json.loads(line) for line in everything.splitlines() if line.startswith("{")]
    loggers = {line["logger"] for line in lines}
    assert {"kamiyo.request", "gunicorn.error", "gunicorn.access", "stripe"} <= loggers, loggers
    invalid = [line["message"] for line in lines if line["logger"] == "gunicorn.error"
               and line["message"].startswith("Invalid request")]
    assert len(invalid) == len(answers), invalid
    assert any("Invalid HTTP header name: 'sk_live_[REDACTED]@'" in message for message in invalid), invalid
    assert KMY[:12] + "[REDACTED]" in everything and "Bearer [REDACTED]" in everything
    assert "[REDACTED CARD]" in everything
    # Nothing but JSON lines: no plain-text side channel (stripe-python's prints, gunicorn's
    # default formatter, a traceback).
    stray = [line for line in everything.splitlines() if line.strip() and not line.startswith("{")]
    assert not stray, stray
