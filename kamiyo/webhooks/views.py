"""POST /api/v1/webhooks/stripe: Stripe's deliveries. No API key: the signature is the credential.

body size (413) → signature on the raw bytes → inbox → handler → answer. A refused request
counts against its IP's rate limit, and the one past it answers 429 (kamiyo/webhooks/limiting.py).
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..extensions import limiter
from ..http_errors import ApiError
from ..openapi import NO_AUTH, errors, json_response
from . import inbox, metrics
from .limiting import count_refusal, counts_only_refusals, record_violation, webhook_limit
from .verify import MALFORMED_BODY, VerificationError, verify_event

log = logging.getLogger("kamiyo.webhooks")

bp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks")
# WEBHOOK_RATE_LIMIT_COUNT=all: on the blueprint, hit in before_request, before the body is read.
limiter.limit(webhook_limit, exempt_when=counts_only_refusals, on_breach=record_violation)(bp)


def _refused(reason: str, detail: str) -> None:
    count_refusal()  # past the limit: raises the 429
    metrics.REJECTED.labels(reason).inc()
    log.warning("webhook refused: %s", detail, extra={"client_ip": request.remote_addr})


@bp.post("/stripe")
def stripe_webhook():
    try:
        payload = request.get_data(cache=False)  # MAX_CONTENT_LENGTH (1 MiB) → 413
    except RequestEntityTooLarge:
        _refused("too_large", "body larger than MAX_CONTENT_LENGTH")
        raise
    try:
        event = verify_event(
            payload,
            request.headers.get("Stripe-Signature"),
            current_app.config["STRIPE_WEBHOOK_SECRETS"],
            int(current_app.config["WEBHOOK_TOLERANCE_SECONDS"]),
        )
    except VerificationError as exc:
        _refused("malformed" if exc.kind in MALFORMED_BODY else "signature", exc.reason)
        # Generic on purpose: the reason would help a forger; it is in our log.
        raise ApiError(
            400,
            "invalid_webhook",
            "The webhook could not be verified.",
            "Send events signed by Stripe with the endpoint's signing secret.",
        ) from None
    try:
        received = inbox.receive(event, payload.decode("utf-8"))
    except inbox.NotSettled:
        raise ApiError(
            503,
            "webhook_deferred",
            "The event could not be settled with Stripe right now.",
            "Stripe retries the delivery; nothing to do.",
            headers={"Retry-After": "60"},
        ) from None
    except inbox.HandlerFailed:
        raise ApiError(
            500, "webhook_failed", "The event could not be processed.", "Stripe retries the delivery; nothing to do."
        ) from None
    if received.status != inbox.DUPLICATE:
        log.debug(
            "webhook %s %s: %s",
            event["id"],
            event["type"],
            received.status,
            extra={"event_id": event["id"], "event_type": event["type"], "outcome": received.status},
        )
    return jsonify(status=received.status)


# Its entry in GET /api/v1/openapi.json (registered by init_app).
OPENAPI = {
    "/api/v1/webhooks/stripe": {
        "post": {
            "operationId": "stripeWebhook",
            "summary": "Stripe's event deliveries",
            "description": "No API key: the Stripe-Signature header, over the raw body, is the credential. "
            "Refused requests count against the sender's IP; past the limit, 429.",
            "tags": ["webhooks"],
            "security": NO_AUTH,
            "parameters": [
                {
                    "name": "Stripe-Signature",
                    "in": "header",
                    "required": True,
                    "description": "t=<unix time>,v1=<HMAC-SHA256 of 't.body' with the signing secret>",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "200": json_response(
                    "The event was received (status: what became of it).",
                    {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                ),
                **errors(
                    (
                        (400, "invalid_webhook"),
                        (413, "payload_too_large"),
                        (429, "rate_limited"),
                        (500, "webhook_failed"),
                        (503, "webhook_deferred"),
                    )
                ),
            },
        }
    }
}
