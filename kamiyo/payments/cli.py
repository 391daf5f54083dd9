"""flask --app wsgi payments ..."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from .. import audit

payments_cli = AppGroup("payments", help="Payments maintenance.")


@payments_cli.command("reconcile")
@click.option(
    "--subscriptions",
    is_flag=True,
    help="Also compare every live Stripe subscription of ours with our rows, and report duplicates.",
)
def reconcile(subscriptions: bool) -> None:
    """Adopt Stripe customers (and subscriptions) of ours that have no row here."""
    from .service import reconcile_customers, reconcile_subscriptions

    with audit.cli_action("run-reconcile", "--subscriptions" if subscriptions else "customers"):
        click.echo("Scanning Stripe customers for kamiyo_user_id without a local row...")
        summary = reconcile_customers()
        click.echo(
            f"Scanned {summary['scanned']} Stripe customers: {summary['ours']} ours, "
            f"{summary['already_known']} already known, {summary['adopted']} adopted, "
            f"{summary['conflicts']} conflicts (see the log), {summary['in_progress']} in progress."
        )
        if not subscriptions:
            return
        click.echo("Scanning Stripe subscriptions for kamiyo_customer_id...")
        report = reconcile_subscriptions()
        click.echo(
            f"Scanned {report.scanned} Stripe subscriptions: {report.ours} ours, {report.known} known, "
            f"{report.adopted} adopted, {report.status_fixed} status corrected, "
            f"{len(report.duplicates)} duplicates."
        )
        for duplicate in report.duplicates:
            click.echo(
                f"DUPLICATE {duplicate['subscription']} duplicates {duplicate['duplicate_of']} "
                f"(customer {duplicate['customer_id']}, price {duplicate['price_id']}); to cancel it:"
            )
            click.echo(f"    {duplicate['command']}")
        if report.duplicates:
            raise SystemExit(1)  # a pipeline or a cron mail notices


@payments_cli.command("cancel-subscription")
@click.argument("stripe_subscription_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cancel_subscription(stripe_subscription_id: str, yes: bool) -> None:
    """Cancel one subscription on Stripe (a duplicate that reconcile reported)."""
    from .subscriptions import cancel_on_stripe

    with audit.cli_action("cancel-subscription", stripe_subscription_id[:255]):
        if not yes:
            click.confirm(
                f"Cancel Stripe subscription {stripe_subscription_id} now? The customer is no longer billed for it",
                abort=True,
            )
        status = cancel_on_stripe(stripe_subscription_id)
        click.echo(f"{stripe_subscription_id}: {status}")
