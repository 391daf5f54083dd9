"""Secrets a client sends are not stored in the database either.

The log is redacted; a webhook sender over its rate limit is also recorded in
rate_limit_violations with its User-Agent (control and non-ASCII characters replaced), shown
on the dashboard and in GET /api/v1/ops/rate-limit-violations. A Stripe key or an API key in
it used to be stored whole; it now goes through the log redaction before it is stored.
"""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import select

from kamiyo.extensions import db
from kamiyo.webhooks.models import RateLimitViolation

# Alerts go out once per calendar hour, blocks are counted per minute: each test stays in one of each.
pytestmark = pytest.mark.usefixtures("mid_minute")

SK_LIVE = "sk_live_" + secrets.token_hex(12)
KMY = "kmy_" + secrets.token_urlsafe(32)


def test_a_secret_in_a_blocked_senders_user_agent_is_not_stored(make_app, monkeypatch):
    from kamiyo.webhooks import limiting

    monkeypatch.setattr(limiting, "FLUSH_SECONDS", 0)
    app = make_app(WEBHOOK_RATE_LIMIT="2/minute")
    client = app.test_client()
    for _ in range(5):
        client.post("/api/v1/webhooks/stripe", data=b"{}", environ_base={"REMOTE_ADDR": "203.0.113.91"},
                    headers={"Stripe-Signature": "t=1,v1=x", "User-Agent": f"billing-sync/2.1 key={SK_LIVE} {KMY}"})
    with app.app_context():
        stored = list(db.session.scalars(select(RateLimitViolation.user_agent)))
    assert stored, "no violation was recorded"
    leaked = [agent for agent in stored if SK_LIVE in agent or KMY in agent]
    assert not leaked, f"rate_limit_violations.user_agent holds secrets: {leaked}"
