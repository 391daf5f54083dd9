"""Alerts to the team: a CRITICAL/WARNING log line, plus a Slack-compatible
POST to ALERT_WEBHOOK_URL when set.

An alert with a `dedup_key` goes out at most once per key and hour across all
processes: the first process to insert (key, hour) into `alerts_sent` sends it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import requests
from flask import current_app
from prometheus_client import Counter

from ..claims import claim
from ..control_chars import replace_control
from ..extensions import db
from ..models import AlertSent, utcnow
from .logging import redact

log = logging.getLogger("kamiyo.alerts")

LEVELS = {"critical": logging.CRITICAL, "warning": logging.WARNING, "info": logging.INFO}

# Alert text quotes what clients chose (user agents, ids, paths): in Slack, "<!channel>" pings
# everyone and "<https://x|label>" is a link that says something else. Each piece is cut to
# these lengths (so that no one can push the alert's own words out of view), stripped of
# control characters, and escaped as Slack asks: & < > as &amp; &lt; &gt;.
TITLE_LIMIT = 200
TEXT_LIMIT = 1000
FIELD_LIMIT = 200


def slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(value: object, limit: int) -> str:
    """`value` as Slack text that shows as typed: cut to `limit` characters, then escaped."""
    text = replace_control(str(value), "?")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return slack_escape(text)


def _claim(dedup_key: str, now: dt.datetime) -> bool:
    period = now.strftime("%Y-%m-%dT%H")
    if not claim(AlertSent(dedup_key=dedup_key[:255], period=period, sent_at=now)):
        return False
    db.session.commit()
    return True


def send_alert(
    title: str,
    text: str,
    *,
    severity: str = "critical",
    dedup_key: str | None = None,
    fields: dict[str, object] | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Raise an alert. Returns False when it was a duplicate within the hour.

    `now`: when what is alerted on happened, if the caller counted it by the hour: the
    hour it is de-duplicated in must be that one, even when the clock ticks over meanwhile.
    """
    if dedup_key and not _claim(dedup_key, now or utcnow()):
        return False
    title, text = redact(title), redact(text)
    log.log(
        LEVELS.get(severity, logging.CRITICAL),
        "ALERT %s: %s",
        title,
        text,
        extra={"alert_severity": severity, **(fields or {})},
    )
    url = current_app.config.get("ALERT_WEBHOOK_URL")
    if url:
        payload = {
            "text": f"[{severity.upper()}] {slack_text(title, TITLE_LIMIT)}",
            "attachments": [
                {
                    "color": "danger" if severity == "critical" else "warning",
                    "text": slack_text(text, TEXT_LIMIT),
                    "fields": [
                        {
                            "title": slack_text(k, FIELD_LIMIT),
                            "value": slack_text(redact(str(v)), FIELD_LIMIT),
                            "short": True,
                        }
                        for k, v in (fields or {}).items()
                    ],
                }
            ],
        }
        # Off the caller's thread: a slow chat service must not hold up a payment request.
        thread = threading.Thread(
            target=_post,
            args=(url, payload, current_app.config["ALERT_TIMEOUT_SECONDS"]),
            name="alert-post",
            daemon=True,
        )
        thread.start()
    return True


def _post(url: str, payload: dict, timeout: float) -> None:
    try:
        requests.post(url, json=payload, timeout=timeout)
    except requests.RequestException as exc:
        # The log line already carries the alert; delivery is best effort.
        log.error("alert delivery failed: %s", type(exc).__name__)


DUPLICATE_SUBSCRIPTIONS = Counter(
    "duplicate_subscriptions_detected_total",
    "Second live subscriptions for one customer and price found on Stripe (stored flagged)",
)


def alert_duplicate_subscription(
    stripe_subscription_id: str, duplicate_of: str, customer_id: int, price_id: str
) -> bool:
    """Stripe holds two live subscriptions for one customer and price: the customer may be
    billed twice. Never cancelled on our own: a person decides which one goes."""
    DUPLICATE_SUBSCRIPTIONS.inc()
    return send_alert(
        "duplicate_subscription_detected",
        f"Stripe subscription {stripe_subscription_id} duplicates {duplicate_of} (customer {customer_id}, "
        f"price {price_id}): the customer may be billed twice. Run `flask --app wsgi payments reconcile "
        f"--subscriptions` for the command that cancels the duplicate.",
        dedup_key=f"duplicate-subscription:{stripe_subscription_id}",
        fields={
            "subscription": stripe_subscription_id,
            "duplicate_of": duplicate_of,
            "customer_id": customer_id,
            "price_id": price_id,
        },
    )
