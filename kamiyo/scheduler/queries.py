"""Reads of the scheduled jobs, for the dashboard and the ops API alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask
from sqlalchemy import select

from ..extensions import db
from ..models import utcnow
from .models import JobRun
from .runner import JOBS_KEY, JobSpec, next_run, timezone_of

RUNS_SHOWN = 5


def job_names(app: Flask) -> list[str]:
    return sorted(app.extensions.get(JOBS_KEY, {}))


def jobs(app: Flask, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Each registered job with its next run and its latest runs (newest first)."""
    now = (now or utcnow()).astimezone(timezone_of(app))
    specs: dict[str, JobSpec] = app.extensions.get(JOBS_KEY, {})
    found = []
    for name in sorted(specs):
        runs = list(
            db.session.scalars(select(JobRun).where(JobRun.job == name).order_by(JobRun.id.desc()).limit(RUNS_SHOWN))
        )
        found.append({"name": name, "next_run": next_run(specs[name], now), "runs": runs})
    return found


def serialise_run(run: JobRun) -> dict[str, Any]:
    return {
        "period": run.period,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "host": run.host,
    }


def serialise_job(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": job["name"],
        "next_run": job["next_run"].isoformat() if job["next_run"] else None,
        "last_runs": [serialise_run(run) for run in job["runs"]],
    }
