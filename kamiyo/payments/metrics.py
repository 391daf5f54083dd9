"""Prometheus metrics of the payments feature (defined once, at import)."""

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Histogram

from ..stripe_gateway.metrics import BREAKER_OPEN, PAYMENT_OPERATIONS

IDEMPOTENCY_DEDUP = Counter(
    "stripe_idempotency_dedup_total", "Requests answered from an existing record instead of calling Stripe"
)
IDEMPOTENCY_KEY_SECONDS = Histogram(
    "stripe_idempotency_key_generation_duration_seconds",
    "Time to derive a Stripe idempotency key",
    buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3),
)

# payment_operations_total's outcomes (the counter is the gateway's: it counts breaker_open).
CREATED = "created"
EXISTING = "existing"  # an idempotent replay: answered from our record
SUPERSEDED = "superseded"  # our lease ran out and another request took the operation over
TRANSIENT_ERROR = "transient_error"
FAILED = "failed"
CANCELED = "canceled"

# What an operation run as fenced phases (phases.py) can end in, and a cancellation.
CREATE_OUTCOMES = (CREATED, EXISTING, SUPERSEDED, TRANSIENT_ERROR, FAILED, BREAKER_OPEN)
CANCEL_OUTCOMES = (CANCELED, EXISTING, BREAKER_OPEN)


def init_operation_series(outcomes: Mapping[str, Iterable[str]]) -> None:
    """Every (operation, outcome) series at 0 from the start: one that first appears at 1
    hides that first event from rate() and increase(), and from the dashboard's ratios."""
    for operation, ends in outcomes.items():
        for outcome in ends:
            PAYMENT_OPERATIONS.labels(operation=operation, outcome=outcome)
