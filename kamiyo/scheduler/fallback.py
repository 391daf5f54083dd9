"""The purges, run by the web process when no scheduler has run them for a day.

The purges are what keeps the tables to their retention (webhook payloads, Stripe
attempt records, operation parameters): a deployment that forgot `scheduler run`
would keep everything for ever, silently. So each web process looks, at most every
SCHEDULER_FALLBACK_MINUTES (and not before that long after it started, so that a
scheduler started beside it has shown up), whether each job registered with
`register_fallback` has run in the last day; if not, it runs it with a WARNING.

- Cheap on the request path: a request only compares a monotonic clock with the next
  check's time; the check and the job run in a background thread of their own, with
  their own app context and session, never in a request's transaction.
- Once across workers and hosts: the run is the job's ordinary run for its current
  period (`run_once`), claimed in `job_runs` like the scheduler's own. Whoever loses the
  claim skips, and a scheduler that fires later that day finds the period done.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import func, select

from ..extensions import db
from ..models import utcnow
from .models import JobRun
from .runner import _started, run_once

log = logging.getLogger("kamiyo.scheduler")

FALLBACK_KEY = "scheduler_fallback_jobs"
_STATE_KEY = "scheduler_fallback_state"
# A daily job runs about this far apart; an hour more lets a slow or late run finish first.
OVERDUE = dt.timedelta(hours=25)


def register_fallback(app: Flask, name: str) -> None:
    """Job `name` (registered with register_job) is run by the web process when overdue."""
    jobs = app.extensions.setdefault(FALLBACK_KEY, [])
    if name not in jobs:
        jobs.append(name)


@dataclass
class _State:
    interval: float
    next_check: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: bool = False


def init_app(app: Flask) -> None:
    minutes = float(app.config.get("SCHEDULER_FALLBACK_MINUTES") or 0)
    if minutes <= 0:
        return
    interval = minutes * 60
    state = app.extensions[_STATE_KEY] = _State(interval, time.monotonic() + interval)

    @app.before_request
    def _check_purges_now_and_then() -> None:
        now = time.monotonic()
        if now < state.next_check:
            return
        with state.lock:
            if now < state.next_check or state.running:
                return
            state.next_check, state.running = now + state.interval, True
        threading.Thread(target=_check, args=(app, state), name="kamiyo-purge-fallback", daemon=True).start()


def _check(app: Flask, state: _State) -> None:
    try:
        run_overdue(app)
    except Exception:
        log.exception("the fallback check of the purges failed")
    finally:
        with state.lock:
            state.running = False


def _last_run(name: str, fallback_jobs: list[str]) -> dt.datetime | None:
    """When job `name` last ran to the end. Never: when a scheduler first showed a sign of
    life (its first run of a job this fallback never runs), so that a new installation is
    not overdue at once."""
    found = db.session.scalar(select(func.max(JobRun.started_at)).where(JobRun.job == name, JobRun.status == "ok"))
    if found is None:
        found = db.session.scalar(select(func.min(JobRun.started_at)).where(JobRun.job.not_in(fallback_jobs)))
    db.session.rollback()
    return found


def _failed_lately(name: str) -> JobRun | None:
    """The job's latest run, when it ran within a day and failed: a scheduler is running it
    (the fallback's reason to run is not that), and its run failed."""
    run = db.session.scalar(
        select(JobRun)
        .where(JobRun.job == name, JobRun.started_at > utcnow() - OVERDUE, JobRun.status != "running")
        .order_by(JobRun.started_at.desc())
        .limit(1)
    )
    db.session.rollback()
    return run if run is not None and run.status == "failed" else None


def run_overdue(app: Flask) -> list[str]:
    """Run every fallback job that has not run for a day; returns those this process ran."""
    if os.getpid() in _started:
        return []  # this process runs the scheduler itself
    ran: list[str] = []
    jobs = list(app.extensions.get(FALLBACK_KEY, ()))
    for name in jobs:
        with app.app_context():
            last = _last_run(name, jobs)
            failed = _failed_lately(name)
            failed_at, failed_on = (failed.finished_at or failed.started_at, failed.host) if failed else (None, None)
        if last is not None and last > utcnow() - OVERDUE:
            continue
        if run_once(app, name):  # False: another worker or host claimed this period's run
            ran.append(name)
            with app.app_context():
                now_status = _latest_status(name)
            if failed_at is not None:
                log.warning(
                    "job %s failed in the scheduler at %s on %s (its error is in that scheduler's log; "
                    "`flask --app wsgi scheduler status`), and had not succeeded for a day: this web process "
                    "ran it again: %s",
                    name,
                    failed_at.isoformat(timespec="seconds"),
                    failed_on,
                    now_status,
                    extra={"job": name},
                )
            else:
                log.warning(
                    "job %s had not run for a day: the scheduler isn't running the purges (start `flask --app "
                    "wsgi scheduler run`, or set SCHEDULER_ENABLED); this web process ran it: %s",
                    name,
                    now_status,
                    extra={"job": name},
                )
    return ran


def _latest_status(name: str) -> str:
    status = db.session.scalar(
        select(JobRun.status).where(JobRun.job == name).order_by(JobRun.started_at.desc()).limit(1)
    )
    db.session.rollback()
    return status or "unknown"
