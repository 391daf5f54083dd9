"""Alerts quote what attackers choose (user agents, ids, paths): in Slack, `<!channel>` would
ping everyone and `<https://evil.example/reset|click>` would be a link saying something else.
What reaches the Slack payload is cut short and escaped (& < > as &amp; &lt; &gt;)."""

from __future__ import annotations

import json

import pytest

from kamiyo.observability.alerts import send_alert
from tests.support import wait_until

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

HOSTILE = "<!channel> <https://evil.example/reset|click> & <@U123> <!here>"


def _unescaped(payload) -> list[str]:
    """Every text of the payload in which Slack would see a control sequence."""
    texts = [payload["text"]]
    for attachment in payload["attachments"]:
        texts.append(attachment["text"])
        for field in attachment["fields"]:
            texts += [field["title"], field["value"]]
    # Only &amp; &lt; &gt; may follow an ampersand; no angle bracket at all.
    return [t for t in texts if "<" in t or ">" in t or t.replace("&amp;", "").replace("&lt;", "")
            .replace("&gt;", "").count("&")]


def test_slack_text_escapes_and_cuts():
    from kamiyo.observability.alerts import slack_text

    assert slack_text(HOSTILE, 200) == ("&lt;!channel&gt; &lt;https://evil.example/reset|click&gt; &amp; "
                                        "&lt;@U123&gt; &lt;!here&gt;")
    long = slack_text("<" * 500, 10)
    assert long == "&lt;" * 9 + "…"  # cut before escaping: no half escape
    assert slack_text("a\r\nfake line\x1b[31m", 100) == "a?fake line?[31m"


def test_the_webhook_rate_limit_alert_carries_a_hostile_user_agent_escaped(make_app, slack, monkeypatch):
    from kamiyo.webhooks import limiting

    monkeypatch.setattr(limiting, "_alerted", set())
    monkeypatch.setattr(limiting, "FLUSH_SECONDS", 0)
    url, received = slack
    app = make_app(WEBHOOK_RATE_LIMIT="2/minute", RATE_LIMIT_ALERT_PER_HOUR=3, ALERT_WEBHOOK_URL=url)
    client = app.test_client()
    for _ in range(6):
        client.post("/api/v1/webhooks/stripe", data=b"{}", environ_base={"REMOTE_ADDR": "203.0.113.66"},
                    headers={"Stripe-Signature": "t=1,v1=x", "User-Agent": HOSTILE + " " + "A" * 400})
    wait_until(lambda: received)
    [payload] = received
    assert not _unescaped(payload), json.dumps(payload, indent=1)
    from kamiyo.observability.alerts import FIELD_LIMIT

    fields = {f["title"]: f["value"] for f in payload["attachments"][0]["fields"]}
    assert fields["user_agent"].startswith("&lt;!channel&gt; &lt;https://evil.example/reset|click&gt; &amp;")
    assert len(fields["user_agent"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")) == FIELD_LIMIT


def test_every_part_of_an_alert_is_escaped_and_bounded(make_app, slack):
    url, received = slack
    app = make_app(ALERT_WEBHOOK_URL=url)
    with app.app_context():
        send_alert(f"Odd id {HOSTILE}", f"path /api/{HOSTILE} " + "x" * 2000,
                   fields={"path": f"/api/{HOSTILE}", f"<!{HOSTILE}>": "key", "id": 42})
    wait_until(lambda: received)
    [payload] = received
    assert not _unescaped(payload), json.dumps(payload, indent=1)
    from kamiyo.observability.alerts import TEXT_LIMIT

    shown = payload["attachments"][0]["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert len(shown) == TEXT_LIMIT
    assert payload["attachments"][0]["text"].endswith("…")
    assert {"title": "id", "value": "42", "short": True} in payload["attachments"][0]["fields"]
