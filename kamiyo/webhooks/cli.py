"""flask --app wsgi webhooks replay EVENT_ID | --failed; webhooks list"""

from __future__ import annotations

import click
from flask.cli import AppGroup

from .. import audit
from . import inbox
from .models import EVENT_STATUSES

webhooks_cli = AppGroup("webhooks", help="Stored Stripe webhook events.")


@webhooks_cli.command("replay")
@click.argument("event_id", required=False)
@click.option("--failed", is_flag=True, help="Replay every event whose last attempt failed.")
def replay(event_id: str | None, failed: bool) -> None:
    """Run stored events through their handler again and print what happened."""
    with audit.cli_action("replay-webhook", event_id or "--failed"):
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


# --- webhooks send-test ----------------------------------------------------------------------

WEBHOOK_PATH = "/api/v1/webhooks/stripe"  # the intake's route (views.bp's prefix + /stripe)


def _test_object(event_type: str, tag: str) -> dict:
    """A Stripe object of the event's kind that is not ours: the service checks the signature,
    stores the event and runs its handler, and changes none of our customers or subscriptions."""
    customer = f"cus_test_{tag}"
    if event_type.startswith("customer.subscription."):
        return {
            "id": f"sub_test_{tag}",
            "object": "subscription",
            "customer": customer,
            "status": "active",
            "metadata": {},
        }
    if event_type.startswith("customer."):
        return {"id": customer, "object": "customer", "email": "send-test@example.com", "metadata": {}}
    if event_type.startswith("invoice."):
        return {"id": f"in_test_{tag}", "object": "invoice", "customer": customer, "amount_due": 0}
    if event_type.startswith("payment_intent."):
        return {
            "id": f"pi_test_{tag}",
            "object": "payment_intent",
            "customer": customer,
            "amount": 100,
            "amount_received": 100 if event_type.endswith(".succeeded") else 0,
            "currency": "usd",
        }
    return {"id": f"obj_test_{tag}", "object": event_type.split(".", 1)[0]}


def _local_url() -> str:
    # Read when the command runs (not at import): the port the running service was started on.
    import os

    return f"http://127.0.0.1:{os.environ.get('PORT') or '8000'}"


@webhooks_cli.command("send-test")
@click.argument("event_type", metavar="TYPE")
@click.option(
    "--url", default=_local_url, show_default="http://127.0.0.1:$PORT, else :8000", help="The running service."
)
def send_test(event_type: str, url: str) -> None:
    """Send the running service a test event of TYPE (customer.created, invoice.paid, ...),
    signed with the configured STRIPE_WEBHOOK_SECRET as Stripe signs, and print its answer.
    Its object is not one of ours, so it changes no customer or subscription; a
    payment_intent.* event does count in the payment success rate, as a real one would."""
    import json
    import secrets
    import time

    import requests
    from flask import current_app

    from ..demo_traffic import stripe_signature

    config = current_app.config
    secret = (config.get("STRIPE_WEBHOOK_SECRETS") or [None])[0]
    if not secret:
        raise click.ClickException("no webhook secret is configured: set STRIPE_WEBHOOK_SECRET")
    if not event_type or len(event_type) > 128 or not all(part.isidentifier() for part in event_type.split(".")):
        raise click.BadParameter("an event type such as customer.created", param_hint="TYPE")
    tag = secrets.token_hex(6)
    now = int(time.time())
    event = {
        "id": f"evt_test_{tag}",
        "object": "event",
        "api_version": config["STRIPE_API_VERSION"],
        "created": now,
        "livemode": False,
        "pending_webhooks": 1,
        "type": event_type,
        "data": {"object": _test_object(event_type, tag)},
    }
    body = json.dumps(event).encode()
    target = url.rstrip("/") + WEBHOOK_PATH
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe_signature(body, secret, now),
        "User-Agent": "kamiyo-webhooks-send-test",
    }
    try:
        answer = requests.post(target, data=body, headers=headers, timeout=30)
    except requests.RequestException:
        raise click.ClickException(f"no Kamiyo server answers at {url}: start it (`make run`) or pass --url") from None
    click.echo(f"{event['id']} ({event_type}) -> {target}: {answer.status_code} {answer.text.strip()[:300]}")
    if not answer.ok:
        raise click.exceptions.Exit(1)
