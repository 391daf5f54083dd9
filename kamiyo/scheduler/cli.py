"""flask --app wsgi scheduler run"""

from __future__ import annotations

import signal
import threading

import click
from flask import current_app
from flask.cli import AppGroup

from .. import service_lock
from ..observability.logging import log_as_service
from .runner import _own_jobs, start_scheduler, stop_scheduler

scheduler_cli = AppGroup("scheduler", help="Scheduled jobs (version check, alert evaluation, ...).")


@scheduler_cli.command("run")
def scheduler_run() -> None:
    """Run the scheduler in this process until Ctrl-C or SIGTERM (one per deployment is
    enough; more are safe: each job runs once per period)."""
    log_as_service()  # a long-running process: its log is its output, as a server's is
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    try:
        service_lock.hold(app, "scheduler")  # `db restore` refuses while it runs
    except service_lock.RestoreInProgress as exc:
        raise click.ClickException(str(exc)) from None
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


@scheduler_cli.command("status")
def scheduler_status() -> None:
    """Each job's next run and its last runs."""
    from .queries import jobs

    for job in jobs(current_app):
        next_run = job["next_run"].isoformat() if job["next_run"] else "-"
        click.echo(f"{job['name']:<24} next {next_run}")
        for run in job["runs"][:3]:
            finished = run.finished_at.strftime("%Y-%m-%d %H:%M:%S") if run.finished_at else "-"
            click.echo(f"    {run.period:<28} {run.status:<8} finished {finished}")


@scheduler_cli.command("run-job")
@click.argument("name")
@click.option(
    "--force",
    is_flag=True,
    help="Run it once more even if its period's run is done or under way, as a manual run of its own.",
)
def scheduler_run_job(name: str, force: bool) -> None:
    """Run job NAME now as its current period's run: not when that run is done or under way
    (a failed one is taken again), and the scheduler then skips the period. With --force, a
    manual run of its own, recorded apart; the scheduled run still happens."""
    from .queries import job_names
    from .runner import run_for_period, run_manual

    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the proxy's own method
    if name not in job_names(app):
        raise click.ClickException(f"no job named {name!r}; jobs: {', '.join(job_names(app))}")
    if force:
        manual = run_manual(app, name)
        if manual is None:
            raise click.ClickException("a manual run of this job started this second; try again")
        status = manual.status
        click.echo(f"{name}: {status} (manual run {manual.period})")
    else:
        ran, run = run_for_period(app, name)
        status = run.status
        if not ran:
            click.echo(
                f"{name}: not run, its run for {run.period} is {status} already ({_where(run)}); "
                "--force runs it once more as a manual run"
            )
            return
        click.echo(f"{name}: {status} (its run for {run.period})")
    if status != "ok":
        raise click.exceptions.Exit(1)


def _fmt(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _where(run) -> str:
    if run.status == "running":
        return f"pid {run.pid} on {run.host}, since {_fmt(run.started_at)}"
    return f"finished {_fmt(run.finished_at)}"
