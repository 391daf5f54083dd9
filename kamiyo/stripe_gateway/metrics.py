"""Prometheus metrics of the Stripe gateway (defined once, at import)."""

from prometheus_client import Counter, Gauge, Histogram

STRIPE_RETRIES = Counter(
    "stripe_api_retry_total", "Stripe attempts that failed transiently and were retried", ["error_type"]
)
STRIPE_REQUEST_SECONDS = Histogram(
    "stripe_api_request_duration_seconds", "Duration of one Stripe attempt", ["operation"]
)
# Counted by the gateway (breaker_open) and by the payment operations that use it.
PAYMENT_OPERATIONS = Counter("payment_operations_total", "Payment operations by outcome", ["operation", "outcome"])
BREAKER_STATE = Gauge(
    "payment_circuit_breaker_state",
    "Stripe circuit breaker: 0 closed, 1 open, 2 half-open",
    multiprocess_mode="livemax",
)
