"""Prometheus metrics of the Stripe API version monitor (the seed's names)."""

from prometheus_client import Gauge

from .monitor import STATUSES

# "mostrecent": with several processes (PROMETHEUS_MULTIPROC_DIR) the latest
# writer wins, so a long-lived worker's start-up value does not linger.
VERSION_AGE_DAYS = Gauge(
    "stripe_api_version_age_days", "Age in days of the configured Stripe API version", multiprocess_mode="mostrecent"
)
VERSION_STATUS = Gauge(
    "stripe_api_version_status",
    "1 for the current status of the Stripe API version, else 0",
    ["status"],
    multiprocess_mode="mostrecent",
)
VERSION_MISMATCHES = Gauge(
    "stripe_api_version_mismatches",
    "Places (library, responses, webhook events, webhook endpoints) on another version, at the last check",
    multiprocess_mode="mostrecent",
)


def publish(status: str, age_days: int | None) -> None:
    """The status from the version's age (what the seed's alert rules read)."""
    for name in STATUSES:
        VERSION_STATUS.labels(status=name).set(1 if name == status else 0)
    if age_days is not None:
        VERSION_AGE_DAYS.set(age_days)
