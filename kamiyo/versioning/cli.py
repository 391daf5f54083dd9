"""flask --app wsgi stripe-version check [--json] [--local]"""

from __future__ import annotations

import json
import sys

import click
from flask.cli import AppGroup

from .jobs import run_version_check

EXIT_CODES = {"healthy": 0, "warning": 1, "critical": 2, "unknown": 3}


stripe_version_cli = AppGroup("stripe-version", help="Health of the pinned Stripe API version.")


@stripe_version_cli.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@click.option("--local", is_flag=True, help="Do not ask Stripe (age, library and webhook events only).")
def check_command(as_json: bool, local: bool) -> None:
    """Check the configured Stripe API version; exit 0 healthy, 1 warning, 2 critical, 3 unknown.

    The check is stored in the history and alerts like the weekly one."""
    result = run_version_check("cli", remote=not local)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        click.echo(result["message"])
        # In every status: a healthy version still has a next step, and where to read about it.
        recommendation = result["recommendation"]
        click.echo(f"Recommendation: {recommendation['action']}")
        click.echo(f"  changelog: {recommendation['changelog_url']}")
        click.echo(f"  upgrade guide: {recommendation['upgrade_guide_url']}")
        for mismatch in result["mismatches"]:
            click.echo(f"Mismatch ({mismatch['source']}): {mismatch['message']}")
            click.echo(f"  what to do: {mismatch['action']}")
        unverified = [
            name
            for name in ("responses", "webhook_events", "webhook_endpoints")
            if result["observed"][name]["status"] != "verified"
        ]
        for name in unverified:
            click.echo(f"Unverified {name.replace('_', ' ')}: {result['observed'][name]['reason']}")
        if not result.get("stored", False):
            click.echo("Note: the check could not be stored in the history (see the log).", err=True)
    sys.exit(EXIT_CODES[result["status"]])
