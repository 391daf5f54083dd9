"""`flask --app wsgi report` on the window's boundary, and without the service's metrics folder.

The window starts at now - 1h to the second (06:00:30 -> 05:00:30). The Stripe-call counts
come from per-minute rollups: the minute holding the window's start (05:00:00) holds rows on
both sides of it, so the same report over the same rows must say the same before and after the
`rollup-minutes` job ran."""

from __future__ import annotations

import datetime as dt

import pytest

from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.release.report import build_report
from kamiyo.rollups import roll_up
from kamiyo.stripe_gateway.models import StripeCall

pytestmark = pytest.mark.both_databases


def _error_rate(app, now: dt.datetime):
    with app.app_context():
        checks, numbers = build_report("1h", now)
        db.session.remove()
    [check] = [c for c in checks if c.name == "error rate"]
    return check, numbers["stripe_calls"]


def test_rows_in_the_first_seconds_of_the_window_count_after_the_rollup_job_too(app):
    now = (utcnow() - dt.timedelta(minutes=5)).replace(second=40, microsecond=0)
    start = now - dt.timedelta(hours=1)
    with app.app_context():
        db.session.add_all(
            StripeCall(operation="customer.create", attempt=1, outcome="error", created_at=start + dt.timedelta(
                seconds=10), duration_ms=1.0)
            for _ in range(10)
        )
        db.session.add_all(
            StripeCall(operation="customer.create", attempt=1, outcome="success",
                       created_at=start + dt.timedelta(minutes=30), duration_ms=1.0)
            for _ in range(990)
        )
        db.session.commit()

    before, counted_before = _error_rate(app, now)
    assert counted_before["errors"] == 10 and before.status == "fail", before  # 1%: the target (< 1%) missed

    with app.app_context():
        roll_up()  # the scheduler's rollup-minutes job, every 2 minutes
        db.session.remove()

    after, counted_after = _error_rate(app, now)
    assert counted_after == counted_before, f"before the rollup job: {counted_before}; after: {counted_after}"
    assert after.status == "fail", after


def test_report_with_the_services_metrics_folder_absent_says_so_instead_of_crashing(
    database, database_uri, isolated_environment, tmp_path
):
    """report tells to set PROMETHEUS_MULTIPROC_DIR "as the service has it" to read dedup hits.
    Run where that folder is not (another host, the service not started since a reboot cleared
    /run): every module-level metric opens a file in it at import, and report dies with a
    FileNotFoundError traceback and exit 1 (read as "something to look at"), no numbers at all."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from kamiyo.config import DEFAULTS
    from tests.support import ROOT, TEST_SECRETS

    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("KAMIYO_")}
    env.update(TEST_SECRETS, KAMIYO_INSTANCE_PATH=str(isolated_environment), DATABASE_URL=database_uri,
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "run-kamiyo-metrics"))
    done = subprocess.run(
        [Path(sys.executable).with_name("flask"), "--app", "wsgi", "report", "--since", "1h"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr[-500:]
    assert "dedup hits" in done.stdout, done.stdout
