"""Prometheus metrics of the Stripe gateway (defined once, at import)."""

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

STRIPE_RETRIES = Counter(
    "stripe_api_retry_total", "Stripe attempts that failed transiently and were retried", ["error_type"]
)
STRIPE_REQUEST_SECONDS = Histogram(
    "stripe_api_request_duration_seconds", "Duration of one Stripe attempt", ["operation"]
)
# Counted by the gateway (breaker_open) and by the payment operations that use it.
PAYMENT_OPERATIONS = Counter("payment_operations_total", "Payment operations by outcome", ["operation", "outcome"])
BREAKER_OPEN = "breaker_open"  # payment_operations_total's outcome for a call the open breaker refused
# Set on each change a worker sees, and from the breaker's store before each scrape. With
# several workers the latest value wins: the breaker lives in Redis, and a worker that saw it
# open would otherwise hold it open in the answer long after another worker's probe closed it.
BREAKER_STATE = Gauge(
    "payment_circuit_breaker_state",
    "Stripe circuit breaker: 0 closed, 1 open, 2 half-open",
    multiprocess_mode="livemostrecent",
)


def init_retry_series(error_types: Iterable[str]) -> None:
    """A labelled series appears only once it is first used, and then already at 1: a rate or
    increase() over it misses that first retry, and the retry-rate alert has nothing to read
    before it. So every error type the retry layer counts is there from the start, at 0."""
    for error_type in error_types:
        STRIPE_RETRIES.labels(error_type=error_type)
