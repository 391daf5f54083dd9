"""What the service uses of stripe-python besides API calls, in one place."""

from __future__ import annotations

import os

import stripe
from stripe import _util as _stripe_util

# stripe-python prints every request and response (bodies, ids, emails) straight to stderr,
# past the logging handlers and their redaction, when STRIPE_LOG is "debug" or "info". It
# reads the variable once, at its own import, into _util.STRIPE_LOG: cleared here, at ours,
# before any client exists. Clearing it rather than refusing to start is the safer of the
# two: it holds for every process that imports the service (workers, the scheduler, every
# CLI command, tests), also where no start-up check runs, and nothing is printed even in
# debug. stripe's own logger still reaches our redacting handler, at INFO at most.
STRIPE_LOG_IGNORED: str | None = os.environ.get("STRIPE_LOG") or None
_stripe_util.STRIPE_LOG = None
stripe.log = None

# The newest API version this install knows: the one stripe-python pins.
LIBRARY_API_VERSION: str = stripe.api_version

# Every error stripe-python raises derives from this.
StripeError = stripe.StripeError


def signature_matches(payload: str, header: str, secret: str) -> bool:
    """Does one of the header's v1 signatures sign `t.payload` with `secret`?

    Only the HMAC: the caller parses the header and owns the time window.
    """
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except stripe.SignatureVerificationError:
        return False
    return True
