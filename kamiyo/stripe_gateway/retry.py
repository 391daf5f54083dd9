"""Retries of transient Stripe failures, owned by us (stripe-python's own are off)
so that every attempt carries the same idempotency key."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from . import metrics
from .errors import is_replayed, is_transient

log = logging.getLogger(__name__)
T = TypeVar("T")


def should_retry(exc: BaseException) -> bool:
    """Transient errors, unless Stripe says otherwise in Stripe-Should-Retry."""
    if is_replayed(exc):  # the same key can only get the same stored answer
        return False
    headers = getattr(exc, "headers", None) or {}
    verdict = headers.get("Stripe-Should-Retry") or headers.get("stripe-should-retry")
    if verdict == "false":
        return False
    if verdict == "true":
        return True
    return is_transient(exc)


# The seed's label values for the retry counter.
ERROR_LABELS = {"APIConnectionError": "network", "RateLimitError": "rate_limit", "APIError": "api_error"}


def _log_before_sleep(operation: str):
    def before_sleep(state) -> None:
        exc = state.outcome.exception()
        metrics.STRIPE_RETRIES.labels(error_type=ERROR_LABELS.get(type(exc).__name__, type(exc).__name__)).inc()
        log.warning(
            "Stripe %s attempt %d failed with %s; retrying in %.2f s",
            operation,
            state.attempt_number,
            type(exc).__name__,
            state.next_action.sleep,
            extra={"operation": operation, "attempt": state.attempt_number, "error_type": type(exc).__name__},
        )

    return before_sleep


def call_with_retries(
    operation: str, func: Callable[[int], T], *, attempts: int, min_wait: float, max_wait: float
) -> T:
    """Call func(attempt_number) until it succeeds, fails permanently, or attempts run out."""
    retrying = Retrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=min_wait, min=min_wait, max=max_wait),
        before_sleep=_log_before_sleep(operation),
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            return func(attempt.retry_state.attempt_number)
    raise AssertionError("unreachable: tenacity re-raises the last error")
