"""Prometheus metrics of the payments feature (defined once, at import)."""

from prometheus_client import Counter, Gauge, Histogram

STRIPE_RETRIES = Counter(
    "stripe_api_retry_total", "Stripe attempts that failed transiently and were retried", ["error_type"]
)
IDEMPOTENCY_DEDUP = Counter(
    "stripe_idempotency_dedup_total", "Requests answered from an existing record instead of calling Stripe"
)
IDEMPOTENCY_KEY_SECONDS = Histogram(
    "stripe_idempotency_key_generation_duration_seconds",
    "Time to derive a Stripe idempotency key",
    buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3),
)
STRIPE_REQUEST_SECONDS = Histogram(
    "stripe_api_request_duration_seconds", "Duration of one Stripe attempt", ["operation"]
)
PAYMENT_OPERATIONS = Counter("payment_operations_total", "Payment operations by outcome", ["operation", "outcome"])
BREAKER_STATE = Gauge(
    "payment_circuit_breaker_state",
    "Stripe circuit breaker: 0 closed, 1 open, 2 half-open",
    multiprocess_mode="livemax",
)
