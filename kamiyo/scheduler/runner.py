"""The scheduler's machinery: periods and triggers, the job registry, the single-run
guard (claim, run, retake) and starting and stopping the scheduler in a process.

See the package's docstring for how a job runs once per period across processes.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import socket
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app
from werkzeug.serving import is_running_from_reloader

from ..claims import claim
from ..extensions import db, rowcount
from ..models import utcnow
from .models import JobRun

log = logging.getLogger("kamiyo.scheduler")  # one name for the whole package's log lines

JOBS_KEY = "scheduler_jobs"
ALERT_CHECKS_KEY = "scheduler_alert_checks"
ALERT_EVALUATION_JOB = "alert-evaluation"
ALERT_EVALUATION_MINUTES = 5
PRUNE_JOB = "job-runs-prune"
JOB_RUNS_KEPT = dt.timedelta(days=30)  # the alert evaluation alone adds 288 rows a day


@dataclass(frozen=True)
class JobSpec:
    name: str
    trigger: BaseTrigger
    func: Callable[[], Any]  # runs inside an app context
    period_fn: Callable[[dt.datetime], str]


# --- periods and triggers ---------------------------------------------------------


def iso_week(now: dt.datetime) -> str:
    year, week, _ = now.isocalendar()
    return f"{year}-W{week:02d}"


def day(now: dt.datetime) -> str:
    return now.date().isoformat()


def every_minutes(minutes: int) -> Callable[[dt.datetime], str]:
    def period(now: dt.datetime) -> str:
        # In UTC: a local hour that repeats when clocks go back must not reuse its slots.
        now = now.astimezone(dt.UTC)
        slot = now.replace(minute=now.minute - now.minute % minutes, second=0, microsecond=0)
        return slot.strftime("%Y-%m-%dT%H:%M")

    return period


def weekly_trigger(timezone: str, day_of_week: str = "mon", hour: int = 9, minute: int = 0) -> CronTrigger:
    # Day names, not numbers: APScheduler 3 counts 0 = Monday, unlike crontab's 0 = Sunday.
    return CronTrigger(day_of_week=day_of_week, hour=hour, minute=minute, timezone=timezone)


def daily_trigger(timezone: str, hour: int = 3, minute: int = 30) -> CronTrigger:
    return CronTrigger(hour=hour, minute=minute, timezone=timezone)


# --- registries -------------------------------------------------------------------


def register_job(
    app: Flask, name: str, trigger: BaseTrigger, func: Callable[[], Any], period_fn: Callable[[dt.datetime], str]
) -> None:
    app.extensions.setdefault(JOBS_KEY, {})[name] = JobSpec(name, trigger, func, period_fn)


def register_alert_check(app: Flask, name: str, check: Callable[[], Any]) -> None:
    """A check the alert-evaluation job runs every few minutes (it sends its own alerts)."""
    app.extensions.setdefault(ALERT_CHECKS_KEY, {})[name] = check


def evaluate_alert_checks() -> dict[str, str]:
    """Run every registered alert check; one failing check does not stop the others."""
    results: dict[str, str] = {}
    for name, check in current_app.extensions.get(ALERT_CHECKS_KEY, {}).items():
        try:
            check()
            results[name] = "ok"
        except Exception:
            log.exception("alert check %s failed", name)
            db.session.rollback()
            results[name] = "failed"
    return results


def timezone_of(app: Flask) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(app.config["SCHEDULER_TIMEZONE"])


# --- the single-run guard ---------------------------------------------------------

STALE_RUN = dt.timedelta(hours=1)  # a run still "running" after this died with its process


def _retakable(now: dt.datetime):
    """A run that may be taken again: it failed, or its process died while running."""
    return (JobRun.status == "failed") | ((JobRun.status == "running") & (JobRun.started_at < now - STALE_RUN))


def _claim(name: str, period: str) -> bool:
    now, host, pid = utcnow(), socket.gethostname()[:255], os.getpid()
    if claim(JobRun(job=name, period=period, started_at=now, status="running", host=host, pid=pid)):
        db.session.commit()
        return True
    # A failed run, or one whose process died, may be retaken: one contender wins the update.
    retaken = db.session.execute(
        db.update(JobRun)
        .where(JobRun.job == name, JobRun.period == period, _retakable(now))
        .values(status="running", started_at=now, finished_at=None, host=host, pid=pid)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    return rowcount(retaken) == 1


def run_once(app: Flask, name: str, period: str | None = None) -> bool:
    """Run job `name` for `period` (default: the current one) unless some process
    already claimed it. Returns whether this call ran the body."""
    spec: JobSpec = app.extensions[JOBS_KEY][name]
    if period is None:
        period = spec.period_fn(dt.datetime.now(timezone_of(app)))
    with app.app_context():
        if not _claim(name, period):
            log.debug(
                "job %s for %s already claimed by another process; skipped",
                name,
                period,
                extra={"job": name, "period": period},
            )
            return False
        status, summary = "ok", None
        try:
            summary = _summary(spec.func())
        except Exception:
            log.exception("job %s for %s failed", name, period, extra={"job": name, "period": period})
            db.session.rollback()
            status = "failed"
        run = db.session.execute(db.select(JobRun).filter_by(job=name, period=period)).scalar_one()
        run.status, run.finished_at, run.summary = status, utcnow(), summary
        db.session.commit()
        log.info("job %s for %s: %s", name, period, status, extra={"job": name, "period": period})
        return True


SUMMARY_LIMIT = 20_000  # characters of a run's JSON report kept; a bigger one keeps its size only


def _summary(result: Any) -> str | None:
    """A job's return value as JSON for `job_runs.summary` (the dashboard shows the last one)."""
    if result is None:
        return None
    text = json.dumps(result, default=str, sort_keys=True)
    return text if len(text) <= SUMMARY_LIMIT else json.dumps({"truncated": True, "characters": len(text)})


def run_now(app: Flask, name: str) -> str | None:
    """Run job `name` at once, outside its schedule (the dashboard's button), and return its
    status (ok or failed). Its own period, so it never takes the place of the scheduled run;
    None when another run of it started in the same second."""
    run = run_manual(app, name)
    return run.status if run is not None else None


def run_manual(app: Flask, name: str) -> JobRun | None:
    """run_now's run itself (its period names it manual); call within an app context."""
    period = "manual:" + utcnow().strftime("%Y-%m-%dT%H:%M:%S")
    if not run_once(app, name, period=period):
        return None
    return db.session.execute(db.select(JobRun).filter_by(job=name, period=period)).scalar_one()


def current_period(app: Flask, name: str) -> str:
    spec: JobSpec = app.extensions[JOBS_KEY][name]
    return spec.period_fn(dt.datetime.now(timezone_of(app)))


def run_for_period(app: Flask, name: str) -> tuple[bool, JobRun]:
    """Run job `name` as its current period's run, under the scheduler's own rules: not when
    that run is done or under way elsewhere, again when it failed (or its process died).
    Returns whether this call ran it, and the period's run (call within an app context)."""
    period = current_period(app, name)
    ran = run_once(app, name, period)
    run = db.session.execute(db.select(JobRun).filter_by(job=name, period=period)).scalar_one()
    return ran, run


def next_run(spec: JobSpec, now: dt.datetime) -> dt.datetime | None:
    return spec.trigger.get_next_fire_time(None, now)


RETAKE_EVERY = dt.timedelta(hours=1)


def retake_failed(app: Flask, name: str) -> bool:
    """Run job `name` again if its current period's run failed (or died); returns whether it ran."""
    spec: JobSpec = app.extensions[JOBS_KEY][name]
    period = spec.period_fn(dt.datetime.now(timezone_of(app)))
    with app.app_context():
        retakable = db.session.scalar(
            db.select(JobRun.id).where(JobRun.job == name, JobRun.period == period, _retakable(utcnow()))
        )
        db.session.rollback()
    if retakable is None:
        return False  # not started yet in this period (its trigger will), done, or running now
    log.warning("job %s for %s: taking the failed run again", name, period, extra={"job": name, "period": period})
    return run_once(app, name, period)


# --- starting the scheduler -------------------------------------------------------

_lock = threading.Lock()
_started: dict[int, BackgroundScheduler] = {}  # pid → the scheduler started in that process


def build_scheduler(app: Flask) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        timezone=timezone_of(app),
        # A late or missed fire runs once, not once per missed period.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )
    for name, spec in app.extensions.get(JOBS_KEY, {}).items():
        scheduler.add_job(run_once, trigger=spec.trigger, args=[app, name], id=name, name=name)
        scheduler.add_job(
            retake_failed,
            trigger=IntervalTrigger(seconds=RETAKE_EVERY.total_seconds()),
            args=[app, name],
            id=f"{name}:retake",
            name=f"{name} (retake if failed)",
        )
    return scheduler


def _own_jobs(scheduler: BackgroundScheduler) -> list:
    """The jobs features registered, without their hourly retakes."""
    return [job for job in scheduler.get_jobs() if not job.id.endswith(":retake")]


def start_scheduler(app: Flask) -> BackgroundScheduler | None:
    """Start this process's scheduler; None when one already runs here."""
    with _lock:
        if os.getpid() in _started:
            log.warning("scheduler already running in this process; not starting a second one")
            return None
        scheduler = build_scheduler(app)
        scheduler.start()
        _started[os.getpid()] = scheduler
    atexit.register(_shutdown, os.getpid())
    for job in _own_jobs(scheduler):
        log.info("scheduled job %s, next run %s", job.id, job.next_run_time.isoformat(), extra={"job": job.id})
    return scheduler


def _shutdown(pid: int) -> None:
    with _lock:
        scheduler = _started.pop(pid, None)
    if scheduler is not None and scheduler.running:
        scheduler.shutdown(wait=False)


def stop_scheduler() -> None:
    _shutdown(os.getpid())


def _in_process_start_refused() -> str | None:
    """Why the web process must not start its own scheduler now, if it must not."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None  # gunicorn worker, python -c, tests
    from flask.cli import run_command

    if ctx.command is not run_command:  # `flask run` serves; every other command is one-off
        return "one-off CLI command"
    reload = ctx.params.get("reload")
    if reload is None:
        from flask.helpers import get_debug_flag

        reload = get_debug_flag()
    if reload and not is_running_from_reloader():
        return "reloader's parent process"
    return None


def start_in_process(app: Flask) -> BackgroundScheduler | None:
    """create_app's hook: start the scheduler here when SCHEDULER_ENABLED allows it."""
    if not app.config.get("SCHEDULER_ENABLED"):
        return None
    reason = _in_process_start_refused()
    if reason:
        log.debug("scheduler not started in this process: %s", reason)
        return None
    return start_scheduler(app)


# --- built-in jobs ----------------------------------------------------------------


def prune_job_runs() -> int:
    """Forget job runs older than JOB_RUNS_KEPT (their periods will not come again)."""
    result = db.session.execute(db.delete(JobRun).where(JobRun.started_at < utcnow() - JOB_RUNS_KEPT))
    db.session.commit()
    return rowcount(result)
