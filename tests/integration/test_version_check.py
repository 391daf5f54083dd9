"""The full version check: CLI exit codes, history, alerts, mismatches, health,
metrics, start-up log and the cron wrapper. Real SQLite, real localstripe, a
real HTTP stand-in for the Stripe API parts localstripe lacks."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import time_machine
from flask import Flask, jsonify, request

from kamiyo.extensions import db
from kamiyo.versioning.jobs import run_version_check, version_alert_check
from kamiyo.versioning.models import VersionCheck
from kamiyo.versioning.monitor import LIBRARY_API_VERSION, parse_version
from kamiyo.event_versions import register_event_version_source
from kamiyo.webhooks.models import WebhookEvent
from tests.support import both_databases, make_key

ROOT = Path(__file__).resolve().parents[2]
UTC = dt.timezone.utc
LIBRARY_DATE = dt.datetime.combine(parse_version(LIBRARY_API_VERSION).date, dt.time(10), tzinfo=UTC)


def travel(days_after_library: int):
    """Freeze 'now' a number of days after the library's pinned version."""
    return time_machine.travel(LIBRARY_DATE + dt.timedelta(days=days_after_library), tick=True)


def dated(days_before_now: int) -> str:
    return (LIBRARY_DATE + dt.timedelta(days=30 - days_before_now)).date().isoformat()


def checks(app) -> list[VersionCheck]:
    with app.app_context():
        return list(db.session.execute(db.select(VersionCheck).order_by(VersionCheck.id)).scalars())


def alerts(caplog, title: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "kamiyo.alerts" and r.getMessage().startswith(f"ALERT {title}:")]


# --- CLI exit codes -------------------------------------------------------------------

@pytest.mark.parametrize("version, code, first_line", [
    (LIBRARY_API_VERSION, 0, f"Healthy: API version {LIBRARY_API_VERSION} is 30 days old."),
    (dated(200), 1, f"WARNING: API version {dated(200)} is 200 days old. Plan upgrade soon."),
    (dated(400), 2, f"CRITICAL: API version {dated(400)} is 400 days old. Upgrade required immediately."),
    ("not-a-version", 3, "UNKNOWN: API version 'not-a-version' is not a Stripe API version"),
])
def test_cli_exit_code_per_status(make_app, monkeypatch, version, code, first_line):
    monkeypatch.setenv("STRIPE_API_VERSION", version)
    app = make_app()
    with travel(30):
        result = app.test_cli_runner().invoke(args=["stripe-version", "check", "--local"])
    assert result.exit_code == code, result.output
    assert result.output.splitlines()[0].startswith(first_line)
    # In every status, healthy too (the README promises it): what to do, and where to read.
    recommendation = [line for line in result.output.splitlines() if line.startswith(("Recommendation:", "  "))]
    assert recommendation[0].startswith("Recommendation: ")
    assert recommendation[1:3] == [
        "  changelog: https://docs.stripe.com/changelog",
        "  upgrade guide: https://docs.stripe.com/upgrades",
    ]
    [row] = checks(app)
    assert (row.source, row.configured_version, row.remote) == ("cli", version, False)
    assert row.status == ["healthy", "warning", "critical", "unknown"][code]


def test_cli_json_against_localstripe_marks_webhook_endpoints_unverified(stripe_app):
    with travel(30):
        result = stripe_app.test_cli_runner().invoke(args=["stripe-version", "check", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["status"] == "healthy" and body["remote"] is True and body["mismatches"] == []
    assert body["observed"]["webhook_endpoints"] == {
        "status": "unverified", "reason": "this Stripe has no webhook-endpoints API"}
    assert body["recommendation"]["latest_known"] == LIBRARY_API_VERSION
    assert {"version", "version_date", "age_days", "status", "message", "checked_at"} <= set(body)


def test_cli_with_stripe_unreachable_still_answers(app):
    # The test app's Stripe is a closed port: the remote part is unverified, not a failure.
    with travel(30):
        result = app.test_cli_runner().invoke(args=["stripe-version", "check"])
    assert result.exit_code == 0, result.output
    assert "Unverified webhook endpoints: error: APIConnectionError" in result.output


# --- mismatches -------------------------------------------------------------------------

def events_table_source(app):
    """Events in the real webhook inbox (the app reads their versions from it)."""

    def add(event_id: str, api_version: str | None, days_ago: int, livemode: bool = False) -> None:
        received = LIBRARY_DATE + dt.timedelta(days=30 - days_ago)
        with app.app_context():
            db.session.add(WebhookEvent(event_id=event_id, type="customer.updated", api_version=api_version,
                                        livemode=livemode, created=received, received_at=received,
                                        status="processed", payload="{}"))
            db.session.commit()
    return add


@both_databases
def test_webhook_events_on_an_older_version_raise_a_warning_naming_both(make_app, caplog):
    app = make_app()
    add_event = events_table_source(app)
    for n in range(3):
        add_event(f"evt_old_{n}", "2024-09-30.acacia", days_ago=2)
    add_event("evt_current", LIBRARY_API_VERSION, days_ago=1)
    add_event("evt_long_ago", "2020-08-27", days_ago=45)  # outside the 30-day window

    with travel(30), app.app_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        first = run_version_check("scheduler", remote=False)
        second = run_version_check("scheduler", remote=False)
    assert first["age_status"] == "healthy" and first["status"] == "warning"
    assert "2024-09-30.acacia" in first["message"] and LIBRARY_API_VERSION in first["message"]
    [mismatch] = first["mismatches"]
    assert (mismatch["source"], mismatch["found"], mismatch["count"]) == ("webhook_events", "2024-09-30.acacia", 3)
    assert "created with" in mismatch["action"]
    assert first["observed"]["webhook_events"]["versions"] == {"2024-09-30.acacia": 3, LIBRARY_API_VERSION: 1}
    assert second["status"] == "warning"
    # A new mismatch alerts once; the next check finds it already known.
    assert len(alerts(caplog, "Stripe API version mismatch")) == 1
    assert [row.status for row in checks(app)] == ["warning", "warning"]


@both_databases
@pytest.mark.parametrize("demo", [True, False], ids=["demo", "not-demo"])
def test_the_demo_emulators_test_mode_events_are_left_out_in_demo_mode_only(make_app, demo):
    from kamiyo.event_versions import EMULATOR_API_VERSION

    app = make_app(DEMO_MODE=demo)
    add_event = events_table_source(app)
    for n in range(3):
        add_event(f"evt_emulator_{n}", EMULATOR_API_VERSION, days_ago=1)  # what localstripe sends
    add_event("evt_live", EMULATOR_API_VERSION, days_ago=1, livemode=True)  # no emulator sends live events
    add_event("evt_none", None, days_ago=1)
    add_event("evt_current", LIBRARY_API_VERSION, days_ago=1)

    with travel(30), app.app_context():
        result = run_version_check("cli", remote=False)
    seen = result["observed"]["webhook_events"]["versions"]
    if demo:
        assert seen == {EMULATOR_API_VERSION: 1, "(none)": 1, LIBRARY_API_VERSION: 1}
        [mismatch] = [m for m in result["mismatches"] if m["source"] == "webhook_events" and m["found"] != "(none)"]
        assert mismatch["count"] == 1  # the live one only
    else:
        assert seen == {EMULATOR_API_VERSION: 4, "(none)": 1, LIBRARY_API_VERSION: 1}


@pytest.fixture
def stripe_with_endpoints(serve_app):
    """Stands in for Stripe's webhook-endpoints list (localstripe has none), over HTTP."""
    fake = Flask("fake-stripe")
    seen = []

    @fake.get("/v1/webhook_endpoints")
    def webhook_endpoints():
        seen.append(request.headers.get("Stripe-Version"))
        body = {"object": "list", "url": "/v1/webhook_endpoints", "has_more": False, "data": [
            {"id": "we_old", "object": "webhook_endpoint", "api_version": "2020-08-27",
             "url": "https://example.com/hooks/stripe?token=hunter2", "status": "enabled"},
            {"id": "we_default", "object": "webhook_endpoint", "api_version": None,
             "url": "https://example.com/other", "status": "enabled"}]}
        response = jsonify(body)
        response.headers["Stripe-Version"] = request.headers.get("Stripe-Version", "")
        return response

    return serve_app(fake), seen


def test_webhook_endpoint_on_an_old_version_is_a_mismatch(make_app, stripe_with_endpoints, caplog):
    url, seen = stripe_with_endpoints
    app = make_app(STRIPE_API_BASE=url)
    with travel(30), app.test_request_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        result = run_version_check("scheduler")
    assert seen == [LIBRARY_API_VERSION]  # the gateway sends the configured version
    assert result["status"] == "warning"
    endpoints = result["observed"]["webhook_endpoints"]
    assert endpoints["status"] == "verified"
    assert endpoints["endpoints"][0] == {"id": "we_old", "url": "https://example.com/hooks/stripe",
                                         "api_version": "2020-08-27", "status": "enabled"}
    assert "hunter2" not in json.dumps(result)
    assert "stripe_api_version_mismatches 1.0" in app.test_client().get("/metrics").get_data(as_text=True)
    assert [m["key"] for m in result["mismatches"]] == ["webhook_endpoint:we_old:2020-08-27"]
    # The listing's own response header was recorded as a version in use.
    assert result["observed"]["responses"]["versions"][LIBRARY_API_VERSION]["count"] == 1
    assert alerts(caplog, "Stripe API version mismatch")


# --- history and alerts over time -------------------------------------------------------

@both_databases
def test_alert_evaluation_stores_and_alerts_only_when_the_age_status_changes(make_app, caplog):
    app = make_app(STRIPE_API_VERSION="2026-01-05")
    released = dt.datetime(2026, 1, 5, 10, tzinfo=UTC)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        for days in (179, 179, 180, 180):  # the evaluation runs every 5 minutes
            with time_machine.travel(released + dt.timedelta(days=days), tick=True):
                version_alert_check()
    rows = checks(app)
    assert [(r.source, r.age_status, r.age_days) for r in rows] == [
        ("alert-evaluation", "healthy", 179), ("alert-evaluation", "warning", 180)]
    [warning] = alerts(caplog, "Stripe API version warning")
    assert warning.startswith("ALERT Stripe API version warning: "
                              "WARNING: API version 2026-01-05 is 180 days old. Plan upgrade soon.")
    assert "https://docs.stripe.com/upgrades" in warning


@both_databases
def test_weekly_check_reminds_of_a_lasting_critical_once_a_week(make_app, caplog):
    app = make_app(STRIPE_API_VERSION="2023-10-16")
    monday = dt.datetime(2026, 11, 23, 9, tzinfo=UTC)
    with app.app_context(), caplog.at_level(logging.WARNING, logger="kamiyo.alerts"):
        for when in (monday, monday + dt.timedelta(hours=2), monday + dt.timedelta(days=7)):
            with time_machine.travel(when, tick=True):
                run_version_check("scheduler", remote=False)
    assert len(alerts(caplog, "Stripe API version critical")) == 2  # week 1 and week 2, not the re-run
    assert len(checks(app)) == 3


# --- health, metrics, start-up ------------------------------------------------------------

def test_payments_health_shows_the_version_status_without_failing(make_app, localstripe_url):
    app = make_app(STRIPE_API_BASE=localstripe_url, STRIPE_API_VERSION="2023-10-16")
    response = app.test_client().get("/api/v1/payments/health", headers=make_key(app))
    assert response.status_code == 200, response.get_json()
    section = response.get_json()["api_version"]
    assert section["ok"] is True and section["configured"] == "2023-10-16"
    assert section["status"] == "critical" and section["latest_known"] == LIBRARY_API_VERSION
    assert section["message"].startswith("CRITICAL: API version 2023-10-16 is ")


def test_metrics_publish_age_and_status(make_app):
    with time_machine.travel(dt.datetime(2026, 11, 17, 12, tzinfo=dt.UTC), tick=True):
        client = make_app(STRIPE_API_VERSION="2023-10-16").test_client()
        text = client.get("/metrics").get_data(as_text=True)
    assert "stripe_api_version_age_days 1128.0" in text
    assert 'stripe_api_version_status{status="critical"} 1.0' in text
    assert 'stripe_api_version_status{status="healthy"} 0.0' in text


@pytest.mark.parametrize("version, level, message", [
    ("2023-10-16", logging.CRITICAL,
     "[STRIPE VERSION] CRITICAL: API version 2023-10-16 is 1128 days old. Upgrade required immediately."),
    ("2026-10-28.endive", logging.INFO, "[STRIPE VERSION] Healthy: API version 2026-10-28.endive is 20 days old."),
])
def test_startup_logs_the_local_check(make_app, caplog, version, level, message):
    with time_machine.travel(dt.datetime(2026, 11, 17, 12, tzinfo=dt.UTC), tick=False), \
            caplog.at_level(logging.INFO, logger="kamiyo.versioning"):
        make_app(STRIPE_API_VERSION=version)
    [record] = [r for r in caplog.records if r.getMessage().startswith("[STRIPE VERSION]")]
    assert (record.levelno, record.getMessage()) == (level, message)


def test_startup_makes_no_network_call(make_app, stripe_with_endpoints):
    url, seen = stripe_with_endpoints
    make_app(STRIPE_API_BASE=url, STRIPE_API_VERSION="2023-10-16")
    assert seen == []


# --- the cron wrapper ---------------------------------------------------------------------

def test_cron_script_appends_to_log_file_and_keeps_the_exit_code(app_config, tmp_path):
    log_file = tmp_path / "logs" / "stripe_version_check.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "DATABASE"))}
    env.update(KAMIYO_INSTANCE_PATH=str(tmp_path / "instance"), DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"],
               SECRET_KEY="x", STRIPE_SECRET_KEY="sk_test_cron", STRIPE_WEBHOOK_SECRET="whsec_cron",
               STRIPE_API_VERSION="2023-10-16", LOG_FILE=str(log_file))
    script = ROOT / "scripts" / "check_stripe_version.sh"
    for _ in range(2):
        done = subprocess.run([str(script), "--local"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
    text = log_file.read_text()
    assert text.count("stripe-version check exit=2") == 2
    assert "CRITICAL: API version 2023-10-16 is " in text and "sk_test_cron" not in text


# --- observed versions ------------------------------------------------------------------------

def test_event_sources_are_summed_and_none_means_unverified(make_app):
    app = make_app()
    since = dt.datetime(2026, 11, 1, tzinfo=UTC)
    with app.app_context():
        from kamiyo.event_versions import EVENT_SOURCES_KEY, webhook_event_versions

        assert webhook_event_versions(since) == {}  # the inbox is wired, and empty
        app.extensions[EVENT_SOURCES_KEY] = []
        assert webhook_event_versions(since) is None
        register_event_version_source(app, lambda s: {"2024-09-30.acacia": 2} if s == since else {})
        register_event_version_source(app, lambda s: {"2024-09-30.acacia": 1, LIBRARY_API_VERSION: 4})
        assert webhook_event_versions(since) == {"2024-09-30.acacia": 3, LIBRARY_API_VERSION: 4}


def test_response_versions_are_counted_per_app(make_app):
    from kamiyo.versioning.observed import record_response_version, response_versions

    first, second = make_app(), make_app()
    with first.app_context():
        for _ in range(3):
            record_response_version("2024-09-30.acacia")
        record_response_version(None)
        assert {v: e["count"] for v, e in response_versions().items()} == {"2024-09-30.acacia": 3}
    with second.app_context():
        assert response_versions() == {}
    record_response_version("outside any app: ignored")


@both_databases
def test_a_broken_event_source_leaves_events_unverified(make_app, database):
    app = make_app()

    def missing_table(since):
        from sqlalchemy import text

        return dict(db.session.execute(text("SELECT api_version, count(*) FROM no_such_table GROUP BY 1")).all())

    register_event_version_source(app, missing_table)
    with travel(30), app.app_context():
        result = run_version_check("cli", remote=False)
    # Stored all the same: on PostgreSQL only because the failed read was rolled back (an
    # aborted transaction refuses every later statement).
    assert result["stored"] is True and result["status"] == "healthy"
    error = {"sqlite": "OperationalError", "postgresql": "ProgrammingError"}[database]  # no such table
    assert result["observed"]["webhook_events"] == {"status": "unverified", "reason": f"error: {error}"}


@both_databases
def test_versions_seen_by_the_web_workers_reach_the_scheduler_process(make_app, proxy):
    from kamiyo.versioning.observed import response_versions
    from tests.support import make_key

    web = make_app(STRIPE_API_BASE=proxy.url, STRIPE_API_VERSION="2024-09-30.acacia")
    response = web.test_client().post("/api/v1/payments/customers", headers=make_key(web),
                                      json={"user_id": f"versions-{uuid.uuid4().hex[:8]}", "email": "v@example.com"})
    assert response.status_code == 201
    scheduler_process = make_app(STRIPE_API_BASE=proxy.url)  # another app on the same database
    with scheduler_process.app_context():
        seen = response_versions()
    assert seen["2024-09-30.acacia"]["count"] == 1  # the proxy answers with the version it was asked for
