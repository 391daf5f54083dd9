"""flask --app wsgi payments ..."""

from __future__ import annotations

import click
from flask.cli import AppGroup

payments_cli = AppGroup("payments", help="Payments maintenance.")


@payments_cli.command("reconcile")
def reconcile() -> None:
    """Adopt Stripe customers tagged with kamiyo_user_id that have no row here."""
    from .service import reconcile_customers

    click.echo("Scanning Stripe customers for kamiyo_user_id without a local row...")
    summary = reconcile_customers()
    click.echo(
        f"Scanned {summary['scanned']} Stripe customers: {summary['ours']} ours, "
        f"{summary['already_known']} already known, {summary['adopted']} adopted, "
        f"{summary['conflicts']} conflicts (see the log)."
    )
