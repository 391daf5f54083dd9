"""Secrets that arrive URL-encoded are redacted too.

The patterns need a key to start a "word" (no letter or digit before it) and a card number
to be split by spaces or dashes. In a raw request line, as gunicorn's access log (on with
GUNICORN_ACCESS_LOG=1) and its Referer field print it, a quote is %22, a bracket %5B, a
comma %2C, a space + or %20: the character before the key is a letter or digit, and the
key, a Bearer token or a card number used to stay whole in the log. redact() now also
looks at the percent-decoded view of such text and replaces what it finds in the original.
"""

from __future__ import annotations

import secrets

import pytest
import requests

from kamiyo.observability.logging import redact
from tests.support import gunicorn, wait_until

pytestmark = pytest.mark.slow

KMY = "kmy_" + secrets.token_urlsafe(32)
SK_LIVE = "sk_live_" + secrets.token_hex(12)
BEARER = "tok" + secrets.token_hex(16)
CARD_SPACED = "4000 0566 5566 5556"


def test_redact_removes_keys_and_cards_from_url_encoded_text():
    samples = {
        "a key in JSON in a query": f"/x?filter=%7B%22api_key%22%3A%22{KMY}%22%7D",
        "a Stripe key in quotes": f"/x?q=%22{SK_LIVE}%22",
        "a second key in a list": f"/x?keys=kmy_aaaaaaaa{'b' * 30}%2C{KMY}",
        "an Authorization header in a URL": f"/x?h=Authorization%3A%20Bearer%20{BEARER}",
        "a card number with + for spaces": "/x?card=" + CARD_SPACED.replace(" ", "+"),
        "a card number with %20 for spaces": "/x/" + CARD_SPACED.replace(" ", "%20"),
        "a key in a URL inside a query (twice encoded)": f"/login?next=%2Fx%3Fq%3D%2522{KMY}%2522",
        "a card in a URL inside a query (twice encoded)": "/login?next=%2Fx%3Fc%3D" + CARD_SPACED.replace(" ", "%2520"),
    }
    kept = {what: redact(text) for what, text in samples.items()
            if any(s in redact(text) for s in (KMY, SK_LIVE, BEARER, CARD_SPACED.replace(" ", "+"),
                                              CARD_SPACED.replace(" ", "%20"), CARD_SPACED.replace(" ", "%2520")))}
    assert not kept, f"left whole by redact(): {kept}"


def test_ordinary_url_encoded_text_is_left_as_it_is():
    lines = [
        '127.0.0.1 - - [06/Dec/2026:06:19:19 +0000] "GET /api/v1/payments/customers?email=a%40example.com HTTP/1.1"',
        "/v1/customers/search?query=metadata%5B%27kamiyo_user_id%27%5D%3A%27user-42%27",
        "/x?phone=%2B44+20+7946+0958&amount=1999&t=2026-12-06T06:19:19+00:00",
        "100% done, 50%off, %zz, a+b",
    ]
    assert [redact(line) for line in lines] == lines


def test_the_rest_of_an_encoded_line_is_kept_around_a_redacted_key():
    assert redact(f"/x?a=1&q=%22{SK_LIVE}%22&b=2") == "/x?a=1&q=%22sk_live_[REDACTED]%22&b=2"
    assert redact("/x?card=" + CARD_SPACED.replace(" ", "+") + "&n=3") == "/x?card=[REDACTED CARD]&n=3"
    assert redact(f"/l?next=%2Fx%3Fq%3D%2522{KMY}%2522%26n%3D3") == (
        f"/l?next=%2Fx%3Fq%3D%2522{KMY[:12]}[REDACTED]%2522%26n%3D3"
    )
    assert redact(redact(f"/x?q=%22{SK_LIVE}%22")) == redact(f"/x?q=%22{SK_LIVE}%22")  # idempotent


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    instance = tmp_path_factory.mktemp("rt-logs")
    with gunicorn(instance, f"sqlite:///{instance}/kamiyo.db", WEB_CONCURRENCY="1", LOG_LEVEL="INFO",
                  GUNICORN_ACCESS_LOG="1") as url:
        yield url, instance


def test_url_encoded_secrets_do_not_reach_gunicorns_access_log(service):
    url, instance = service
    requests.get(url + "/api/v1/payments/customers", timeout=10,
                 params={"filter": f'{{"api_key":"{KMY}"}}', "q": f'"{SK_LIVE}"', "card": CARD_SPACED})
    requests.get(url + "/health", timeout=10,
                 headers={"Referer": f"https://app.example/settings?h=Authorization%3A%20Bearer%20{BEARER}"})
    requests.get(url + "/nowhere/" + CARD_SPACED, timeout=10)
    def written() -> str:
        text = (instance / "gunicorn.log").read_text()
        return text if "GET /nowhere/" in text else ""

    log = wait_until(written)
    assert '"logger": "gunicorn.access"' in log  # the stream this test is about was written
    found = {name: value for name, value in {"kmy key": KMY, "sk_live key": SK_LIVE, "bearer token": BEARER,
                                              "card (+)": CARD_SPACED.replace(" ", "+"),
                                              "card (%20)": CARD_SPACED.replace(" ", "%20")}.items()
             if value in log}
    assert not found, f"secrets in the log: {sorted(found)}"


def test_a_key_in_a_user_id_does_not_reach_stripes_request_log_line(make_app, proxy, localstripe):
    """Always on, no access log needed: when the service asks Stripe whether a customer exists
    (a later generation, after a stored error), stripe-python logs the search URL at INFO, with
    the user id URL-encoded after %27. The user id takes [A-Za-z0-9_.:@-], so a Stripe or API
    key fits; the redaction, needing no letter or digit before the key, leaves it whole."""
    import io

    from devtools.stripe_proxy import Fault
    from kamiyo.observability.logging import configure_logging
    from tests.support import FAST_RETRIES, make_key

    app = make_app(STRIPE_API_BASE=proxy.url, **FAST_RETRIES)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)  # the service's own handler (JSON, redaction), into a buffer
    user = SK_LIVE
    proxy.add_faults(Fault("status", 500, stored=True, path=r"^/v1/customers$"))
    answer = app.test_client().post("/api/v1/payments/customers", headers=make_key(app),
                                    json={"user_id": user, "email": "searched@example.com"})
    assert answer.status_code == 201, answer.get_json()
    log = stream.getvalue()
    assert '"logger": "stripe"' in log and "Request to Stripe api" in log
    leaked = [line for line in log.splitlines() if SK_LIVE in line]
    assert not leaked, f"a Stripe key in the log: {leaked[:2]}"
