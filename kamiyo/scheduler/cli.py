"""flask --app wsgi scheduler run"""

from __future__ import annotations

import signal
import threading

import click
from flask import current_app
from flask.cli import AppGroup

from .runner import _own_jobs, start_scheduler, stop_scheduler

scheduler_cli = AppGroup("scheduler", help="Scheduled jobs (version check, alert evaluation, ...).")


@scheduler_cli.command("run")
def scheduler_run() -> None:
    """Run the scheduler in this process until Ctrl-C or SIGTERM (one per deployment is
    enough; more are safe: each job runs once per period)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler = start_scheduler(app)
    if scheduler is None:
        raise click.ClickException("a scheduler already runs in this process")
    click.echo(f"Scheduler running ({app.config['SCHEDULER_TIMEZONE']}); Ctrl-C stops it.")
    for job in _own_jobs(scheduler):
        click.echo(f"  {job.id:<24} next run {job.next_run_time.isoformat()}")
    click.echo("  (a run that failed is taken again every hour until it succeeds or its period ends)")
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    stop_scheduler()
    click.echo("Scheduler stopped.")
