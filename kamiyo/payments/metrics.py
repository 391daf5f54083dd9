"""Prometheus metrics of the payments feature (defined once, at import)."""

from prometheus_client import Counter, Histogram

IDEMPOTENCY_DEDUP = Counter(
    "stripe_idempotency_dedup_total", "Requests answered from an existing record instead of calling Stripe"
)
IDEMPOTENCY_KEY_SECONDS = Histogram(
    "stripe_idempotency_key_generation_duration_seconds",
    "Time to derive a Stripe idempotency key",
    buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3),
)
