"""The scheduler: triggers across DST, the single-run guard across real processes,
where it may start, and `flask scheduler run`."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import zoneinfo
from pathlib import Path

import click
import pytest
import time_machine
from flask.cli import run_command
from sqlalchemy import create_engine, text

from kamiyo import scheduler
from kamiyo.extensions import db
from kamiyo.versioning.jobs import VERSION_CHECK_JOB
from tests.support import both_databases
from tests.travel.clock import child_env

ROOT = Path(__file__).resolve().parents[2]


def local(zone: str, *args, fold: int = 0) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone), fold=fold)


# --- triggers ------------------------------------------------------------------------------

@pytest.mark.parametrize("zone, now, expected_local, expected_utc", [
    # Europe leaves summer time on Sunday 2026-10-25: Monday 09:00 moves from 07:00 to 08:00 UTC.
    ("Europe/Copenhagen", (2026, 10, 24, 12, 0), (2026, 10, 26, 9, 0), (2026, 10, 26, 8, 0)),
    ("Europe/Copenhagen", (2026, 10, 19, 9, 0, 1), (2026, 10, 26, 9, 0), (2026, 10, 26, 8, 0)),
    # The US enters summer time on Sunday 2027-03-14: Monday 09:00 EDT is 13:00 UTC.
    ("America/New_York", (2027, 3, 13, 23, 0), (2027, 3, 15, 9, 0), (2027, 3, 15, 13, 0)),
])
def test_version_check_fires_monday_0900_local_across_dst(make_app, zone, now, expected_local, expected_utc):
    app = make_app(SCHEDULER_TIMEZONE=zone)
    job = scheduler.build_scheduler(app).get_job(VERSION_CHECK_JOB)
    fire = job.trigger.get_next_fire_time(None, local(zone, *now))
    assert fire == local(zone, *expected_local)
    assert fire.weekday() == 0 and (fire.hour, fire.minute) == (9, 0)
    assert fire.astimezone(dt.timezone.utc).replace(tzinfo=None) == dt.datetime(*expected_utc)


def test_alert_evaluation_fires_every_five_minutes(app):
    job = scheduler.build_scheduler(app).get_job(scheduler.ALERT_EVALUATION_JOB)
    fire = job.trigger.get_next_fire_time(None, local("UTC", 2026, 11, 23, 9, 2, 30))
    assert fire == local("UTC", 2026, 11, 23, 9, 5)


def test_periods_name_the_week_day_and_slot():
    monday = local("Europe/Copenhagen", 2026, 11, 23, 9, 0, 0)
    assert scheduler.iso_week(monday) == scheduler.iso_week(monday + dt.timedelta(days=6, hours=14)) == "2026-W48"
    assert scheduler.iso_week(monday + dt.timedelta(days=7)) == "2026-W49"
    assert scheduler.day(monday) == "2026-11-23"
    # Sub-daily slots are named in UTC (Copenhagen is UTC+1 in November) ...
    assert scheduler.every_minutes(5)(monday.replace(minute=9, second=59)) == "2026-11-23T08:05"
    # ... so the hour that repeats when clocks go back gets slots of its own.
    first = local("Europe/Copenhagen", 2026, 10, 25, 2, 30, 0, fold=0)
    second = local("Europe/Copenhagen", 2026, 10, 25, 2, 30, 0, fold=1)
    assert scheduler.every_minutes(5)(first) != scheduler.every_minutes(5)(second)


def test_bad_timezone_is_a_configuration_error(make_app):
    from kamiyo.config import ConfigError

    with pytest.raises(ConfigError, match="SCHEDULER_TIMEZONE 'Mars/Base'"):
        make_app(SCHEDULER_TIMEZONE="Mars/Base")


# --- the single-run guard --------------------------------------------------------------------

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["ROOT"])
from kamiyo import create_app, scheduler
app = create_app(json.loads(os.environ["APP_CONFIG"]))
assert os.getpid() in scheduler._started, "the scheduler is on in this process"
open(os.environ["READY"], "w").close()
while not all(os.path.exists(p) for p in os.environ["ALL_READY"].split(",")):
    time.sleep(0.001)
ran = [scheduler.run_once(app, "stripe-version-check", period) for period in ("2026-W48", "2026-W49", "2026-W50")]
print(json.dumps(ran))
"""


@both_databases
def test_two_processes_firing_the_same_period_run_the_job_once(app_config, tmp_path):
    config = {**app_config, "SCHEDULER_ENABLED": True}
    ready = [str(tmp_path / f"ready-{n}") for n in range(2)]
    # Their schedulers run for real: started on a Wednesday's mid-morning, no weekly, daily or
    # five-minute mark falls inside, so no job of theirs adds a row of its own.
    env = {**child_env(dt.datetime(2026, 12, 9, 10, 1, 20, tzinfo=dt.UTC)), "ROOT": str(ROOT),
           "APP_CONFIG": json.dumps(config), "ALL_READY": ",".join(ready)}
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], env={**env, "READY": path}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in ready]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # Per period exactly one process ran the body.
    assert [a + b for a, b in zip(*results)] == [1, 1, 1]
    engine = create_engine(app_config["SQLALCHEMY_DATABASE_URI"])
    with engine.connect() as connection:
        # The scheduler's own jobs may add rows too (the alert evaluation, at a five-minute mark).
        assert connection.execute(text("SELECT count(*) FROM version_checks WHERE source = 'scheduler'")).scalar() == 3
        # Only this job's runs: the alert evaluation may fire too when a five-minute mark falls inside.
        runs = connection.execute(text("SELECT job, period, status FROM job_runs WHERE job = :job ORDER BY period"),
                                  {"job": VERSION_CHECK_JOB}).all()
    engine.dispose()
    assert [tuple(r) for r in runs] == [(VERSION_CHECK_JOB, p, "ok") for p in ("2026-W48", "2026-W49", "2026-W50")]


@both_databases
def test_a_failed_job_is_recorded_and_may_be_retaken_in_its_period(app):
    calls = []

    def boom():
        calls.append(1)
        raise RuntimeError("job body failed")

    scheduler.register_job(app, "boom", scheduler.daily_trigger("UTC"), boom, scheduler.day)
    assert scheduler.run_once(app, "boom", "2026-11-23") is True
    assert scheduler.run_once(app, "boom", "2026-11-23") is True  # failed runs are retaken
    assert scheduler.run_once(app, "boom", "2026-11-24") is True
    assert len(calls) == 3
    with app.app_context():
        rows = db.session.execute(db.select(scheduler.JobRun).order_by(scheduler.JobRun.period)).scalars().all()
        assert [(r.period, r.status, r.pid) for r in rows] == [
            ("2026-11-23", "failed", os.getpid()), ("2026-11-24", "failed", os.getpid())]
        assert all(r.finished_at is not None for r in rows)


@both_databases
def test_a_daily_job_registered_by_another_feature_runs_once_a_day(app):
    # How the webhook inbox purge is wired at merge time.
    purged = []
    scheduler.register_job(app, "webhook-purge", scheduler.daily_trigger(app.config["SCHEDULER_TIMEZONE"]),
                           lambda: purged.append(1), scheduler.day)
    with time_machine.travel(dt.datetime(2026, 12, 9, 12, tzinfo=dt.UTC), tick=True):  # one day for all three
        assert [scheduler.run_once(app, "webhook-purge") for _ in range(3)] == [True, False, False]
    assert purged == [1]


@both_databases
def test_old_job_runs_are_pruned(app):
    import time_machine

    with time_machine.travel(dt.datetime(2026, 10, 1, 12, tzinfo=dt.timezone.utc), tick=True):
        assert scheduler.run_once(app, scheduler.ALERT_EVALUATION_JOB, "2026-10-01T12:00")
    with time_machine.travel(dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc), tick=True):
        assert scheduler.run_once(app, scheduler.ALERT_EVALUATION_JOB, "2026-11-01T12:00")
        assert scheduler.run_once(app, scheduler.PRUNE_JOB, "2026-11-01")
    with app.app_context():
        left = db.session.execute(db.select(scheduler.JobRun.period).order_by(scheduler.JobRun.id)).scalars().all()
    assert left == ["2026-11-01T12:00", "2026-11-01"]


def test_alert_checks_run_even_when_one_fails(app):
    ran = []
    scheduler.register_alert_check(app, "broken", lambda: 1 / 0)
    scheduler.register_alert_check(app, "fine", lambda: ran.append(1))
    with app.app_context():
        results = scheduler.evaluate_alert_checks()
    assert results == {"stripe_api_version": "ok", "broken": "failed", "fine": "ok"}
    assert ran == [1]


# --- where the scheduler may start -------------------------------------------------------------

def test_not_started_unless_enabled(app):
    assert scheduler.start_in_process(app) is None
    assert os.getpid() not in scheduler._started


def test_never_twice_in_one_process(make_app):
    first = make_app(SCHEDULER_ENABLED=True)
    assert os.getpid() in scheduler._started
    running = scheduler._started[os.getpid()]
    jobs = {VERSION_CHECK_JOB, scheduler.ALERT_EVALUATION_JOB, scheduler.PRUNE_JOB, "webhook-purge", "payments-purge",
            "payments-reconcile", "rollup-minutes"}
    assert running.running and {j.id for j in running.get_jobs()} == jobs | {f"{job}:retake" for job in jobs}
    make_app(SCHEDULER_ENABLED=True)
    assert scheduler.start_in_process(first) is None
    assert scheduler._started[os.getpid()] is running


def test_not_in_one_off_cli_commands(make_app):
    app = make_app()
    app.config["SCHEDULER_ENABLED"] = True
    with click.Context(click.Command("upgrade")):
        assert scheduler.start_in_process(app) is None


def test_not_in_the_reloaders_parent_but_in_its_child(make_app, monkeypatch):
    app = make_app()
    app.config["SCHEDULER_ENABLED"] = True
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    with click.Context(run_command) as ctx:
        ctx.params["reload"] = True
        assert scheduler.start_in_process(app) is None
        monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")  # what werkzeug sets in the child it serves from
        assert scheduler.start_in_process(app) is not None


def test_flask_scheduler_run_starts_and_stops_cleanly(app_config, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "KAMIYO_", "SCHEDULER"))}
    env.update(KAMIYO_INSTANCE_PATH=str(tmp_path / "instance"), DATABASE_URL=app_config["SQLALCHEMY_DATABASE_URI"],
               SECRET_KEY="x", STRIPE_SECRET_KEY="sk_test_sched", STRIPE_WEBHOOK_SECRET="whsec_sched",
               SCHEDULER_TIMEZONE="Europe/Copenhagen")
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("Scheduler running (Europe/Copenhagen)")
        lines = [proc.stdout.readline() for _ in range(7)]  # one line per job
        assert any(line.split()[0] == VERSION_CHECK_JOB and "T09:00:00+0" in line for line in lines), lines
        assert any(line.split()[0] == "payments-reconcile" for line in lines), lines
        assert "taken again every hour" in proc.stdout.readline()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Scheduler stopped." in out and "Traceback" not in err
    # A service, not a one-off command: its log at LOG_LEVEL (INFO), start-up lines included.
    logged = [json.loads(line)["message"] for line in err.splitlines()]
    assert "kamiyo configured" in logged
    assert any(line.startswith(f"scheduled job {VERSION_CHECK_JOB}, next run ") for line in logged), logged


def _flaky(failures: int) -> tuple[list[int], object]:
    """A job that fails its first `failures` runs (as in a Stripe outage); the list counts runs."""
    calls: list[int] = []

    def job():
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("Stripe was down")

    return calls, job


@both_databases
def test_a_failed_run_can_be_retaken_in_the_same_period(make_app):
    app = make_app()
    calls, flaky = _flaky(1)
    scheduler.register_job(app, "flaky-test-job", scheduler.daily_trigger("UTC"), flaky, scheduler.day)
    assert scheduler.run_once(app, "flaky-test-job", "2026-11-23") is True  # ran, and failed
    assert scheduler.run_once(app, "flaky-test-job", "2026-11-23") is True  # retaken, succeeded
    assert scheduler.run_once(app, "flaky-test-job", "2026-11-23") is False  # done for the period
    assert len(calls) == 2


@both_databases
def test_a_failed_run_is_retaken_within_the_hour_until_it_succeeds(make_app):
    """The weekly version check failing on Monday morning must not wait a week."""
    import time_machine

    app = make_app()
    calls, flaky = _flaky(2)
    scheduler.register_job(app, "flaky-weekly", scheduler.weekly_trigger("UTC"), flaky, scheduler.iso_week)
    retake = scheduler.build_scheduler(app).get_job("flaky-weekly:retake")
    assert retake.trigger.interval == dt.timedelta(hours=1)
    with time_machine.travel(dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc), tick=False):
        assert scheduler.retake_failed(app, "flaky-weekly") is False  # never the period's first run
        assert calls == []
        assert scheduler.run_once(app, "flaky-weekly") is True  # the trigger's run: fails
        assert scheduler.retake_failed(app, "flaky-weekly") is True  # fails again
        assert scheduler.retake_failed(app, "flaky-weekly") is True  # succeeds
        assert scheduler.retake_failed(app, "flaky-weekly") is False  # done for the week
    assert len(calls) == 3
    with app.app_context():
        run = db.session.execute(db.select(scheduler.JobRun).filter_by(job="flaky-weekly")).scalar_one()
        assert (run.period, run.status) == ("2026-W48", "ok")


@both_databases
def test_a_run_whose_process_died_is_retaken_but_not_one_still_running(make_app):
    import time_machine

    app = make_app()
    calls = []
    scheduler.register_job(app, "died", scheduler.daily_trigger("UTC"), lambda: calls.append(1), scheduler.day)
    with time_machine.travel(dt.datetime(2026, 11, 23, 12, tzinfo=dt.timezone.utc), tick=False):
        with app.app_context():
            db.session.add(scheduler.JobRun(job="died", period="2026-11-23", status="running", host="gone", pid=1,
                                            started_at=dt.datetime(2026, 11, 23, 11, 30, tzinfo=dt.timezone.utc)))
            db.session.commit()
        assert scheduler.retake_failed(app, "died") is False  # 30 minutes: perhaps still at work
    with time_machine.travel(dt.datetime(2026, 11, 23, 13, tzinfo=dt.timezone.utc), tick=False):
        assert scheduler.retake_failed(app, "died") is True  # 90 minutes: its process is gone
    assert calls == [1]


def test_run_job_and_status_commands(app):
    runner = app.test_cli_runner()
    unknown = runner.invoke(args=["scheduler", "run-job", "nope"])
    assert unknown.exit_code == 1 and "no job named 'nope'; jobs: alert-evaluation, job-runs-prune" in unknown.output
    with time_machine.travel(dt.datetime(2026, 11, 23, 12, 0, 5, tzinfo=dt.timezone.utc), tick=False):
        ran = runner.invoke(args=["scheduler", "run-job", "job-runs-prune"])
        assert ran.exit_code == 0 and ran.output == "job-runs-prune: ok (its run for 2026-11-23)\n"
        status = runner.invoke(args=["scheduler", "status"]).output
    assert re.search(r"job-runs-prune\s+next 2026-11-24T04:15:00\+00:00", status), status
    assert "    2026-11-23                   ok       finished 2026-11-23 12:00:05" in status


@both_databases
def test_run_job_keeps_once_per_period_and_force_records_a_manual_run(make_app):
    """Without --force the job runs as its period's run, which the scheduler then leaves alone
    (a failed one is taken again); --force runs it once more, as a manual run of its own."""
    app = make_app()
    calls, flaky = _flaky(1)
    scheduler.register_job(app, "flaky-daily", scheduler.daily_trigger("UTC"), flaky, scheduler.day)
    runner = app.test_cli_runner()
    with time_machine.travel(dt.datetime(2026, 11, 23, 12, 0, 5, tzinfo=dt.timezone.utc), tick=False):
        first = runner.invoke(args=["scheduler", "run-job", "flaky-daily"])
        assert (first.exit_code, first.output) == (1, "flaky-daily: failed (its run for 2026-11-23)\n")
        retaken = runner.invoke(args=["scheduler", "run-job", "flaky-daily"])
        assert (retaken.exit_code, retaken.output) == (0, "flaky-daily: ok (its run for 2026-11-23)\n")
        again = runner.invoke(args=["scheduler", "run-job", "flaky-daily"])
        assert (again.exit_code, again.output) == (0, (
            "flaky-daily: not run, its run for 2026-11-23 is ok already (finished 2026-11-23 12:00:05 UTC); "
            "--force runs it once more as a manual run\n"))
        assert len(calls) == 2
        assert scheduler.run_once(app, "flaky-daily") is False  # the scheduler's own fire skips the day
        forced = runner.invoke(args=["scheduler", "run-job", "flaky-daily", "--force"])
        assert (forced.exit_code, forced.output) == (0, "flaky-daily: ok (manual run manual:2026-11-23T12:00:05)\n")
    assert len(calls) == 3
    with app.app_context():
        runs = db.session.execute(db.select(scheduler.JobRun.period, scheduler.JobRun.status)
                                  .filter_by(job="flaky-daily").order_by(scheduler.JobRun.id)).all()
    assert [tuple(run) for run in runs] == [("2026-11-23", "ok"), ("manual:2026-11-23T12:00:05", "ok")]


def test_run_job_while_its_period_runs_elsewhere_says_where(make_app):
    app = make_app()
    scheduler.register_job(app, "busy", scheduler.daily_trigger("UTC"), lambda: None, scheduler.day)
    with time_machine.travel(dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc), tick=False):
        with app.app_context():
            db.session.add(scheduler.JobRun(job="busy", period="2026-11-23", status="running", host="web-1",
                                            pid=4242, started_at=dt.datetime(2026, 11, 23, 11, 59,
                                                                             tzinfo=dt.timezone.utc)))
            db.session.commit()
        busy = app.test_cli_runner().invoke(args=["scheduler", "run-job", "busy"])
    assert (busy.exit_code, busy.output) == (0, (
        "busy: not run, its run for 2026-11-23 is running already (pid 4242 on web-1, since 2026-11-23 11:59:00 "
        "UTC); --force runs it once more as a manual run\n"))
