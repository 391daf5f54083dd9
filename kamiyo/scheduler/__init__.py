"""Scheduled jobs (APScheduler 3) that run once per period across all processes.

Every feature registers its jobs with `register_job(app, name, trigger, func,
period_fn)`. Whatever starts the scheduler (one web process, several gunicorn
workers, several hosts, `flask scheduler run`), each run first claims the row
(job, period) in `job_runs`, unique on both: the first process to insert it
runs the job body, every other one skips. `period_fn(now)` names the period
from the current time in SCHEDULER_TIMEZONE (an ISO week for a weekly job, a
date for a daily one), so processes that fire a little apart agree on it.

Where the scheduler runs:
- `flask --app wsgi scheduler run`: a dedicated process (what `make run` and a
  multi-worker deployment use);
- in the web process itself when SCHEDULER_ENABLED is true (a single-process
  deployment or `flask run`): never twice in one process, never in the
  reloader's parent, never in a one-off CLI command (`db upgrade`, ...).
- nowhere (a forgotten `scheduler run`): each web process then runs the purges
  registered with `register_fallback` itself when they have not run for a day,
  and warns (fallback.py).

A run that failed (Stripe down during the weekly version check, say), or whose
process died, is taken again by the hourly retake (`retake_failed`), until it
succeeds or its period ends: a weekly job does not wait a week for its next
chance. The retake never starts a period's first run; only the job's own
trigger does.

The package: `models` (JobRun), `runner` (triggers, registries, the claim,
run and retake, start and stop), `fallback` (the purges without a scheduler),
`cli` (`flask scheduler ...`). Everything a
feature or a test uses is imported from here.
"""

from __future__ import annotations

import logging
import zoneinfo

from apscheduler.triggers.cron import CronTrigger
from flask import Flask

from ..config import ConfigError
from . import cli, fallback
from .fallback import register_fallback
from .models import JobRun
from .runner import (
    ALERT_CHECKS_KEY,
    ALERT_EVALUATION_JOB,
    ALERT_EVALUATION_MINUTES,
    JOB_RUNS_KEPT,
    JOBS_KEY,
    PRUNE_JOB,
    RETAKE_EVERY,
    STALE_RUN,
    JobSpec,
    build_scheduler,
    daily_trigger,
    day,
    evaluate_alert_checks,
    every_minutes,
    iso_week,
    next_run,
    prune_job_runs,
    register_alert_check,
    register_job,
    retake_failed,
    run_now,
    run_once,
    start_in_process,
    start_scheduler,
    stop_scheduler,
    timezone_of,
    weekly_trigger,
)
from .runner import _started as _started  # which process runs a scheduler: tests look

__all__ = [
    "ALERT_CHECKS_KEY",
    "ALERT_EVALUATION_JOB",
    "ALERT_EVALUATION_MINUTES",
    "JOBS_KEY",
    "JOB_RUNS_KEPT",
    "PRUNE_JOB",
    "RETAKE_EVERY",
    "STALE_RUN",
    "JobRun",
    "JobSpec",
    "build_scheduler",
    "daily_trigger",
    "day",
    "evaluate_alert_checks",
    "every_minutes",
    "init_app",
    "iso_week",
    "next_run",
    "prune_job_runs",
    "register_alert_check",
    "register_fallback",
    "register_job",
    "retake_failed",
    "run_now",
    "run_once",
    "start_in_process",
    "start_scheduler",
    "stop_scheduler",
    "timezone_of",
    "weekly_trigger",
]


def init_app(app: Flask) -> None:
    try:
        timezone_of(app)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"SCHEDULER_TIMEZONE {app.config['SCHEDULER_TIMEZONE']!r} is not an "
            "IANA time zone (e.g. UTC, Europe/Copenhagen)"
        ) from None
    register_job(
        app,
        ALERT_EVALUATION_JOB,
        CronTrigger(minute=f"*/{ALERT_EVALUATION_MINUTES}", timezone=app.config["SCHEDULER_TIMEZONE"]),
        evaluate_alert_checks,
        every_minutes(ALERT_EVALUATION_MINUTES),
    )
    register_job(
        app, PRUNE_JOB, daily_trigger(app.config["SCHEDULER_TIMEZONE"], hour=4, minute=15), prune_job_runs, day
    )
    register_fallback(app, PRUNE_JOB)
    fallback.init_app(app)  # the web process runs the purges when no scheduler has for a day
    # APScheduler announces every job it adds and runs at INFO; run_once logs what matters.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    app.cli.add_command(cli.scheduler_cli)
