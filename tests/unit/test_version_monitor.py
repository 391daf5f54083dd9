"""The version monitor: parsing, age and status on a frozen clock (no mocks)."""

from __future__ import annotations

import datetime as dt

import pytest
import stripe
import time_machine

from kamiyo.versioning.jobs import find_mismatches
from kamiyo.versioning.monitor import (
    LIBRARY_API_VERSION, VersionFormatError, VersionMonitor, parse_version, version_base)

UTC = dt.timezone.utc


def days_after(version_date: str, days: int) -> dt.datetime:
    return dt.datetime.fromisoformat(version_date).replace(hour=12, tzinfo=UTC) + dt.timedelta(days=days)


# --- the seed's three tests, on a frozen clock ---------------------------------------

def test_version_age_calculation():
    with time_machine.travel(dt.datetime(2024, 10, 14, 9, 30, tzinfo=UTC), tick=False):
        health = VersionMonitor("2023-10-16").check_version_health()
    assert health["version"] == "2023-10-16"
    assert health["version_date"] == "2023-10-16"
    assert health["age_days"] == 364
    assert health["status"] == "warning"
    assert health["message"] == "WARNING: API version 2023-10-16 is 364 days old. Plan upgrade soon."
    assert health["checked_at"] == "2024-10-14T09:30:00+00:00"


def test_warning_threshold():
    monitor = VersionMonitor("2023-10-16")
    with time_machine.travel(days_after("2023-10-16", 179), tick=False):
        assert monitor.check_version_health()["status"] == "healthy"
    with time_machine.travel(days_after("2023-10-16", 180), tick=False):
        health = monitor.check_version_health()
    assert health["status"] == "warning" and health["age_days"] == 180


def test_critical_threshold():
    monitor = VersionMonitor("2023-10-16")
    with time_machine.travel(days_after("2023-10-16", 364), tick=False):
        assert monitor.check_version_health()["status"] == "warning"
    with time_machine.travel(days_after("2023-10-16", 365), tick=False):
        health = monitor.check_version_health()
    assert health["status"] == "critical"
    assert health["message"] == ("CRITICAL: API version 2023-10-16 is 365 days old. "
                                 "Upgrade required immediately.")


def test_healthy_message_and_recommendation():
    with time_machine.travel(days_after("2026-10-28", 25), tick=False):
        health = VersionMonitor("2026-10-28.endive").check_version_health()
    assert health["message"] == "Healthy: API version 2026-10-28.endive is 25 days old."
    recommendation = health["recommendation"]
    # The pin of stripe-python 16.1.0 (requirements.txt), written out: a library upgrade must be seen here.
    assert recommendation["latest_known"] == "2026-10-28.endive"
    assert recommendation["changelog_url"].startswith("https://docs.stripe.com/")
    assert recommendation["upgrade_available"] is (parse_version(stripe.api_version).date > dt.date(2026, 10, 28))


def test_old_version_recommends_the_library_version():
    health = VersionMonitor("2023-10-16").check_version_health()
    assert health["recommendation"]["upgrade_available"] is True
    assert LIBRARY_API_VERSION in health["recommendation"]["action"]


def test_thresholds_are_configurable():
    with time_machine.travel(days_after("2026-01-01", 30), tick=False):
        health = VersionMonitor("2026-01-01", warning_days=30, critical_days=60).check_version_health()
    assert health["status"] == "warning"


# --- every version format -------------------------------------------------------------

@pytest.mark.parametrize("raw, date, codename, preview, base", [
    ("2023-10-16", "2023-10-16", None, False, "2023-10-16"),
    ("2024-09-30.acacia", "2024-09-30", "acacia", False, "2024-09-30.acacia"),
    ("2025-03-31.basil", "2025-03-31", "basil", False, "2025-03-31.basil"),
    ("2025-08-27.clover", "2025-08-27", "clover", False, "2025-08-27.clover"),
    ("2026-02-25.dahlia", "2026-02-25", "dahlia", False, "2026-02-25.dahlia"),
    ("2026-10-28.endive", "2026-10-28", "endive", False, "2026-10-28.endive"),
    ("2027-04-30.fennel", "2027-04-30", "fennel", False, "2027-04-30.fennel"),  # a future codename
    ("2024-09-30.acacia; custom_checkout_beta=v1", "2024-09-30", "acacia", False, "2024-09-30.acacia"),
    ("2023-10-16; x_beta=v2; other_beta=v1", "2023-10-16", None, False, "2023-10-16"),
    ("2025-04-30.preview", "2025-04-30", None, True, "2025-04-30.preview"),
    ("2025-04-30.basil.preview", "2025-04-30", "basil", True, "2025-04-30.basil.preview"),
])
def test_version_formats(raw, date, codename, preview, base):
    parsed = parse_version(raw)
    assert (parsed.date.isoformat(), parsed.codename, parsed.preview, parsed.base) == (date, codename, preview, base)
    with time_machine.travel(days_after(date, 10), tick=False):
        health = VersionMonitor(raw).check_version_health()
    assert health["status"] == "healthy" and health["age_days"] == 10
    assert health["message"] == f"Healthy: API version {raw} is 10 days old."


@pytest.mark.parametrize("raw", [
    "", "   ", None, "latest", "2023-13-01", "2023-02-30", "23-10-16", "2023-10-16.Acacia",
    "2023-10-16.", "2023-10-16;", "2023/10/16", "2023-10-16 acacia", "2023-10-16.acacia.basil",
])
def test_anything_else_is_unknown_with_a_clear_message(raw):
    health = VersionMonitor(raw).check_version_health()
    assert health["status"] == "unknown"
    assert health["age_days"] is None and health["version_date"] is None
    assert health["message"].startswith("UNKNOWN: ")
    assert "STRIPE_API_VERSION" in health["message"] or "YYYY-MM-DD" in health["message"]
    if (raw or "").strip():
        with pytest.raises(VersionFormatError):
            parse_version(raw)


def test_a_version_dated_in_the_future_is_unknown():
    with time_machine.travel(dt.datetime(2026, 1, 1, tzinfo=UTC), tick=False):
        health = VersionMonitor("2026-10-28.endive").check_version_health()
    assert health["status"] == "unknown" and "future" in health["message"]


def test_age_counts_utc_calendar_days():
    # 23:59 UTC on the release day is day 0; one minute later it is day 1.
    with time_machine.travel(dt.datetime(2026, 10, 28, 23, 59, tzinfo=UTC), tick=False):
        assert VersionMonitor("2026-10-28").check_version_health()["age_days"] == 0
    with time_machine.travel(dt.datetime(2026, 10, 29, 0, 0, tzinfo=UTC), tick=False):
        assert VersionMonitor("2026-10-28").check_version_health()["age_days"] == 1


# --- mismatches (pure part) ------------------------------------------------------------

def test_beta_flags_do_not_count_as_a_mismatch():
    configured = f"{LIBRARY_API_VERSION}; x_beta=v1"
    assert version_base(configured) == LIBRARY_API_VERSION
    assert find_mismatches(configured, LIBRARY_API_VERSION,
                           {LIBRARY_API_VERSION: {"count": 3}}, {LIBRARY_API_VERSION: 5},
                           [{"id": "we_1", "api_version": LIBRARY_API_VERSION}]) == []


def test_every_source_of_mismatch_is_named():
    found = find_mismatches("2024-09-30.acacia", "2026-10-28.endive",
                            {"2024-09-30.acacia": {"count": 2}, "2025-03-31.basil": {"count": 1}},
                            {"2023-10-16": 4},
                            [{"id": "we_old", "api_version": "2020-08-27"},
                             {"id": "we_default", "api_version": None}])
    assert [(m["source"], m["found"]) for m in found] == [
        ("library", "2026-10-28.endive"), ("responses", "2025-03-31.basil"),
        ("webhook_events", "2023-10-16"), ("webhook_endpoint", "2020-08-27")]
    endpoint = found[-1]
    assert endpoint["key"] == "webhook_endpoint:we_old:2020-08-27"
    assert "created with" in endpoint["action"] and "api_version=2024-09-30.acacia" in endpoint["action"]
