"""flask --app wsgi <command>: operator commands."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from . import api_keys, audit, scopes, users
from .models import utcnow
from .observability.logging import log_verbosely, redact

DEMO_CREDENTIALS_FILE = "demo-credentials.json"
DEMO_USER_EMAIL = "demo@kamiyo.local"
DEMO_PRICE = "price_demo_pro_monthly"  # seeded in the emulator by `make run` (devtools/run.py)


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        log_verbosely()


def add_verbose_option(command: click.Command) -> None:
    """Give `command` (every command of a group) a --verbose flag: a one-off command logs
    warnings and errors only, and with the flag its whole log, start-up lines included.

    Added here rather than on `flask` itself, whose options the app cannot extend. A command
    with a --verbose of its own (alembic's `db history`, say) keeps it."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_verbose_option(sub)
        return
    if any("--verbose" in getattr(param, "opts", ()) for param in command.params):
        return
    command.params.append(
        click.Option(
            ["--verbose"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_verbose,
            help="Log at INFO too, start-up included (otherwise warnings and errors only).",
        )
    )


def _fmt(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


api_keys_cli = AppGroup("api-keys", help="Create, list and revoke API keys for the JSON API.")


@api_keys_cli.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scope_list",
    multiple=True,
    metavar="SCOPE",
    help=f"Restrict the key to SCOPE (repeatable): {', '.join(scopes.SCOPES)}. Without it: a full key.",
)
@click.option("--expires-in", metavar="DURATION", help="The key stops working after this long: 90d, 12h, 30m.")
def api_keys_create(name: str, scope_list: tuple[str, ...], expires_in: str | None) -> None:
    """Create a key called NAME; the key is printed once, on the last line."""
    with audit.cli_action("create-api-key", name[:255]) as entry:
        try:
            lifetime = scopes.parse_duration(expires_in) if expires_in is not None else None
            key, plaintext = api_keys.create_api_key(name, scope_list, lifetime)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        entry.target = f"{key.name} ({key.prefix}...)"
        entry.detail = f"scopes: {scopes.describe(key.scopes)}; expires: {_fmt(key.expires_at)}"
    click.echo(
        f"Created {'a full' if key.scopes is None else 'a restricted'} API key #{key.id} '{key.name}' "
        f"({key.prefix}...), scopes: {scopes.describe(key.scopes)}, expires: {_fmt(key.expires_at)}. "
        "Store it now: it is not shown again."
    )
    click.echo(plaintext)


def _status(key) -> str:
    if key.revoked:
        return f"revoked {_fmt(key.revoked_at)}"
    if key.expires_at is not None and key.expires_at <= utcnow():
        return "expired"
    return "active"


@api_keys_cli.command("list")
def api_keys_list() -> None:
    """List keys (prefix only; the keys themselves are not stored), with scopes and expiry."""
    keys = api_keys.list_api_keys()
    if not keys:
        click.echo("No API keys. Create one with: flask --app wsgi api-keys create NAME")
        return
    click.echo(
        f"{'ID':>4}  {'NAME':<24} {'PREFIX':<14} {'CREATED':<20} {'LAST USED':<20} {'EXPIRES':<20} "
        f"{'SCOPES':<44} STATUS"
    )
    for key in keys:
        click.echo(
            f"{key.id:>4}  {key.name[:24]:<24} {key.prefix:<14} {_fmt(key.created_at):<20} "
            f"{_fmt(key.last_used_at):<20} {_fmt(key.expires_at) if key.expires_at else 'never':<20} "
            f"{scopes.describe(key.scopes):<44} {_status(key)}"
        )


@api_keys_cli.command("revoke")
@click.argument("key")
def api_keys_revoke(key: str) -> None:
    """Revoke KEY, given as its numeric id, its prefix or the whole key."""
    with audit.cli_action("revoke-api-key", key[:255]) as entry:
        try:
            found = api_keys.find_api_key(key)
            if found is not None and found.revoked:
                # Said, not silently "Revoked" again: the operator may have meant another key.
                entry.target = f"{found.name} ({found.prefix}...)"
                entry.detail = "already revoked"
                click.echo(
                    f"API key #{found.id} '{found.name}' ({found.prefix}...) was already revoked on "
                    f"{_fmt(found.revoked_at)}; nothing to do."
                )
                return
            revoked = api_keys.revoke_api_key(key)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if revoked is None:
            raise click.ClickException(f"no API key with id, prefix or value {redact(key)!r}")
        entry.target = f"{revoked.name} ({revoked.prefix}...)"
    click.echo(f"Revoked API key #{revoked.id} '{revoked.name}' ({revoked.prefix}...).")


users_cli = AppGroup("users", help="Dashboard users.")


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(users.ROLES), default="viewer", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a dashboard user (the password is asked for, or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    with audit.cli_action("create-user", email.strip().lower()[:254]) as entry:
        try:
            user = users.create_user(email, password, role)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        entry.target, entry.detail = user.email, f"role {user.role}"
    click.echo(f"Created {user.role} {user.email}.")


@users_cli.command("list")
def users_list() -> None:
    """List dashboard users with their role and status."""
    found = users.list_users()
    if not found:
        click.echo("No dashboard users. Create one with: flask --app wsgi users create EMAIL --role admin")
        return
    click.echo(f"{'ID':>4}  {'EMAIL':<40} {'ROLE':<7} {'CREATED':<20} STATUS")
    for user in found:
        status = f"disabled {_fmt(user.disabled_at)}" if user.disabled_at else "active"
        click.echo(f"{user.id:>4}  {user.email[:40]:<40} {user.role:<7} {_fmt(user.created_at):<20} {status}")


@users_cli.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Disable EMAIL: it can no longer sign in, and its open sessions end now."""
    with audit.cli_action("disable-user", email.strip().lower()[:254]):
        user = users.disable_user(email)
        if user is None:
            raise click.ClickException(f"no dashboard user with email {email.strip().lower()[:254]!r}")
    click.echo(f"Disabled {user.email}; its sessions have ended.")


demo_cli = AppGroup("demo", help="Demo mode helpers (used by `make run`).")


def ensure_demo_credentials(instance_path: str) -> dict[str, str]:
    """Create the demo API key and dashboard user once; later runs reuse them."""
    path = Path(instance_path) / DEMO_CREDENTIALS_FILE
    if path.exists():
        return json.loads(path.read_text())
    _, plaintext = api_keys.create_api_key("demo")
    password = secrets.token_urlsafe(12)
    users.create_user(DEMO_USER_EMAIL, password, "admin")
    creds = {"api_key": plaintext, "email": DEMO_USER_EMAIL, "password": password}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh)
    return creds


@demo_cli.command("setup")
def demo_setup() -> None:
    """Create (once) and print the demo API key and dashboard login."""
    if not current_app.config.get("DEMO_MODE"):
        raise click.ClickException("demo setup only runs in demo mode (KAMIYO_DEMO_MODE=1)")
    creds = ensure_demo_credentials(current_app.instance_path)
    click.echo(f"Demo API key:        {creds['api_key']}")
    click.echo(f"Demo dashboard user: {creds['email']} / {creds['password']}")


def _demo_url(variable: str, default: str) -> str:
    # Read when the command runs (not at import): the ports `make run` was started with.
    return f"http://127.0.0.1:{os.environ.get(variable) or default}"


@demo_cli.command("traffic")
@click.option(
    "--url",
    default=lambda: _demo_url("PORT", "8000"),
    show_default="http://127.0.0.1:$PORT, else :8000",
    help="The running demo server (`make run`).",
)
@click.option(
    "--stripe-proxy",
    "proxy_url",
    default=lambda: _demo_url("DEMO_STRIPE_PROXY_PORT", "8421"),
    show_default="http://127.0.0.1:$DEMO_STRIPE_PROXY_PORT, else :8421",
    help="The Stripe emulator proxy `make run` started: its fault queue makes Stripe fail on purpose.",
)
@click.option("--price", default=DEMO_PRICE, show_default=True, help="The price the subscriptions are for.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    help="Stop after this many seconds, done or not.",
)
def demo_traffic(url: str, proxy_url: str, price: str, timeout: float) -> None:
    """About twenty seconds of traffic through the running demo, for its numbers: customers and
    subscriptions, a declined card, Stripe failures retried, the circuit breaker opening and
    closing, a duplicate and a failed webhook, and a rate-limited burst of unsigned ones."""
    from limits import parse_many

    from .demo_traffic import Settings, Traffic

    config = current_app.config
    if not config.get("DEMO_MODE"):
        raise click.ClickException(
            "demo traffic only runs in demo mode (KAMIYO_DEMO_MODE=1): it makes customers, declines cards "
            "and makes Stripe fail on purpose"
        )
    settings = Settings(
        url=url,
        proxy_url=proxy_url,
        webhook_secret=config["STRIPE_WEBHOOK_SECRETS"][0],
        api_version=config["STRIPE_API_VERSION"],
        price=price,
        rate_limit=max(item.amount for item in parse_many(config["WEBHOOK_RATE_LIMIT"])),
        timeout=timeout,
    )
    Traffic(settings).run(lambda: _demo_api_key(current_app.instance_path))


def _demo_api_key(instance_path: str) -> str:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return ensure_demo_credentials(instance_path)["api_key"]
    except SQLAlchemyError:
        raise click.ClickException(
            f"no demo credentials in {instance_path}: start the demo from this folder with `make run` first"
        ) from None
