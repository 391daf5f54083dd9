"""deploy/prometheus/alerts.yml: Prometheus accepts it, each alert fires past its threshold and
stays quiet below it (promtool, from Debian's prometheus package: `make test` installs it), and
it reads metrics that the service really exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

ALERTS = {
    "StripeApiVersionCritical": "critical",
    "StripeApiVersionWarning": "warning",
    "StripeCircuitBreakerOpen": "critical",
    "WebhookRateLimitViolationsHigh": "critical",
    "StripeApiRetryRateHigh": "warning",
    "DuplicateSubscriptionDetected": "critical",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not os.access(found, os.X_OK):
        pytest.fail("promtool is not installed: run `make test` (it installs Debian's prometheus package)")
    return found


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_prometheus_accepts_the_rules(promtool):
    done = run(promtool, "check", "rules", RULES, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


def test_each_alert_fires_past_its_threshold_and_not_below(promtool):
    done = run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_moved_threshold_fails_the_rule_tests(promtool, tmp_path):
    """The rule tests pin the thresholds: one day later for critical is caught."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    assert text.count("(stripe_api_version_age_days) >= 365\n") == 1
    (tmp_path / RULES.name).write_text(text.replace("(stripe_api_version_age_days) >= 365\n",
                                                    "(stripe_api_version_age_days) >= 366\n"))
    done = run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "StripeApiVersionCritical" in done.stdout + done.stderr


def test_each_alert_has_its_severity_annotations_and_both_kinds_of_test():
    found = rules()
    assert {rule["alert"]: rule["labels"]["severity"] for rule in found} == ALERTS
    for rule in found:
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]
        assert all(text.strip() for text in rule["annotations"].values()), rule["alert"]
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    assert {case["alertname"] for case in cases if case["exp_alerts"]} == set(ALERTS), "each alert fires in a test"
    assert {case["alertname"] for case in cases if not case["exp_alerts"]} == set(ALERTS), "and stays quiet in one"


def test_the_rules_read_metrics_the_service_exports(client):
    # In an expression, the names with an underscore are metric names (functions, `by`, `job` have none).
    read = {name for rule in rules() for name in re.findall(r"[a-z][a-z0-9]*_[a-z0-9_]+", rule["expr"])}
    assert read == {
        "stripe_api_version_age_days",
        "payment_circuit_breaker_state",
        "webhook_rate_limit_violations_total",
        "stripe_api_retry_total",
        "stripe_api_request_duration_seconds_count",
        "duplicate_subscriptions_detected_total",
    }
    # From the TYPE lines: a histogram has no sample before its first observation of an operation.
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", client.get("/metrics").get_data(as_text=True), re.MULTILINE))
    suffixes = {"histogram": ("_count", "_sum", "_bucket"), "counter": ("",), "gauge": ("",)}
    exported = {name + suffix for name, kind in types.items() for suffix in suffixes.get(kind, ("",))}
    assert read - exported == set()
