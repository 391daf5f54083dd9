"""The web process's purge fallback (kamiyo/scheduler/fallback.py) when the
scheduler runs, but the purge fails there.

A scheduler that runs every job, and whose webhook-purge failed last night (a lock timeout on
a big table, say): the fallback finds no successful run for a day and runs the purge again in
the web worker. Its WARNING must say that the run failed in the scheduler, not that "the
scheduler isn't running the purges", which would send on-call after the wrong thing."""

from __future__ import annotations

import datetime as dt
import logging

import time_machine

from kamiyo.extensions import db
from kamiyo.models import utcnow
from kamiyo.scheduler.fallback import run_overdue
from kamiyo.scheduler.models import JobRun
from kamiyo.scheduler.runner import timezone_of

# Mid-morning: "tonight" (2 hours ago) and the fallback's run fall on the same day.
NOW = dt.datetime(2026, 12, 10, 4, 0, tzinfo=dt.UTC)


@time_machine.travel(NOW, tick=True)
def test_a_purge_the_scheduler_ran_and_failed_is_not_reported_as_no_scheduler(app, caplog):
    now = utcnow()
    today = now.astimezone(timezone_of(app)).date().isoformat()
    assert today == "2026-12-10"
    with app.app_context():
        rows = [
            # The scheduler is alive: its minute jobs ran a moment ago, every day for weeks.
            JobRun(job="rollup-minutes", period="p-now", started_at=now - dt.timedelta(minutes=1),
                   finished_at=now, status="ok", host="sched-1", pid=7),
            JobRun(job="rollup-minutes", period="p-old", started_at=now - dt.timedelta(days=40),
                   finished_at=now - dt.timedelta(days=40), status="ok", host="sched-1", pid=7),
            # Its other daily jobs ran tonight, fine ...
            *(JobRun(job=name, period=today, started_at=now - dt.timedelta(hours=2),
                     finished_at=now - dt.timedelta(hours=2), status="ok", host="sched-1", pid=7)
              for name in ("job-runs-prune", "payments-purge")),
            # ... and it ran tonight's webhook purge, which failed.
            JobRun(job="webhook-purge", period=today, started_at=now - dt.timedelta(hours=2),
                   finished_at=now - dt.timedelta(hours=2), status="failed", host="sched-1", pid=7),
        ]
        db.session.add_all(rows)
        db.session.commit()
        db.session.remove()

    with caplog.at_level(logging.WARNING, logger="kamiyo.scheduler"):
        run_overdue(app)
    said = [r.getMessage() for r in caplog.records if "webhook-purge" in r.getMessage()]
    assert not [m for m in said if "scheduler isn't running" in m], said
