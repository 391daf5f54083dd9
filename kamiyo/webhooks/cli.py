"""flask --app wsgi webhooks replay EVENT_ID | --failed; webhooks list"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from . import inbox
from .models import EVENT_STATUSES

webhooks_cli = AppGroup("webhooks", help="Stored Stripe webhook events.")


@webhooks_cli.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", is_flag=True, help="Replay every event whose last attempt failed.")
def replay(event_id: str | None, failed: bool) -> None:
    """Run stored events through their handler again and print what happened."""
    if bool(event_id) == failed:
        raise click.UsageError("give either EVENT_ID or --failed")
    event_ids = inbox.failed_event_ids() if failed or event_id is None else [event_id]
    if not event_ids:
        click.echo("No failed events.")
        return
    failures = 0
    for ident in event_ids:
        try:
            result = inbox.replay(ident, only_failed=failed)
            click.echo(f"{ident}: {result.status} (attempt {result.attempts}): {result.note}")
        except inbox.NoLongerFailed as exc:  # a Stripe retry got there first
            click.echo(f"{ident}: skipped, {exc.status} meanwhile")
        except LookupError:
            failures += 1
            click.echo(f"{ident}: not stored (unknown id, or purged)")
        except inbox.HandlerFailed:
            failures += 1
            click.echo(f"{ident}: failed again (see the log; the error is stored on the event)")
    if failures:
        raise click.exceptions.Exit(1)


LIST_LIMIT_MAX = 1000  # a terminal's worth; the dashboard pages through the rest
ERROR_SHOWN = 60  # characters of an event's last error on its line


@webhooks_cli.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES), help="Only events with this status.")
@click.option("--type", "event_type", metavar="TYPE", help="Only events of this type, e.g. invoice.paid.")
@click.option(
    "--limit",
    type=click.IntRange(1, LIST_LIMIT_MAX),
    default=20,
    show_default=True,
    help=f"How many of the newest to show (at most {LIST_LIMIT_MAX}).",
)
def list_events(status: str | None, event_type: str | None, limit: int) -> None:
    """Stored webhook events, newest first (replay a failed one with `webhooks replay EVENT_ID`)."""
    from .queries import latest_events

    found = latest_events(status, event_type, limit)
    if not found:
        filters = [f"status {status}" if status else "", f"type {event_type}" if event_type else ""]
        said = " and ".join(f for f in filters if f)
        click.echo(f"No webhook events{' with ' + said if said else ''}.")
        return
    click.echo(f"{'RECEIVED':<19}  {'EVENT ID':<32} {'TYPE':<32} {'STATUS':<10} {'ATTEMPTS':>8}  LAST ERROR")
    for row in found:
        error = " ".join((row.last_error or "-").split())  # one line per event, whatever the error held
        if len(error) > ERROR_SHOWN:
            error = error[:ERROR_SHOWN] + "..."
        click.echo(
            f"{row.received_at:%Y-%m-%d %H:%M:%S}  {row.event_id:<32} {row.type:<32} {row.status:<10} "
            f"{row.attempts:>8}  {error}"
        )
    if len(found) == limit:
        click.echo(f"(the newest {limit} shown: --limit for more)")
