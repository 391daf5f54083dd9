"""Stripe webhooks: verified, rate-limited, de-duplicated, durable and replayable."""
