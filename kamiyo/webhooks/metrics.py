"""Webhook metrics, defined once (prometheus_client refuses duplicates)."""

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

# Names from the original deployment checklist: operators already graph these.
RATE_LIMIT_VIOLATIONS = Counter(
    "webhook_rate_limit_violations_total", "Webhook requests that exceeded the per-IP rate limit"
)
REQUESTS_BLOCKED = Counter("webhook_requests_blocked_total", "Webhook requests answered 429 without being looked at")

EVENTS = Counter(
    "webhook_events_total", "Verified webhook events by outcome", ["outcome"]
)  # processed | ignored | duplicate | failed
REJECTED = Counter(
    "webhook_rejected_total", "Webhook requests refused before reaching the inbox", ["reason"]
)  # signature | too_large | malformed
HANDLING_SECONDS = Histogram(
    "webhook_handling_seconds",
    "Time to store and handle a verified event (excluding duplicates)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def init_event_series(outcomes: Iterable[str]) -> None:
    """Every outcome's series at 0 from the start: one that first appears at 1 hides that
    first event from rate() and increase(), and the dashboard would show no line for it."""
    for outcome in outcomes:
        EVENTS.labels(outcome)
