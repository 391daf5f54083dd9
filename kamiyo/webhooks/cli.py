"""flask --app wsgi webhooks replay EVENT_ID | --failed"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from . import inbox

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
