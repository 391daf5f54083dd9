"""What the service uses of stripe-python besides API calls, in one place."""

from __future__ import annotations

import stripe

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
