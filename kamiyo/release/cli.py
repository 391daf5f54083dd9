"""The release commands: `preflight`, `verify-deploy`, `report` (exit 0 ok, 1 warnings, 2 failures)."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from .checks import FAIL, Check, as_json, check_secrets, exit_code, stripe_mode, summary_line


def _print(command: str, checks: Sequence[Check], json_output: bool, **extra: Any) -> None:
    if json_output:
        click.echo(as_json(command, checks, **extra))
    else:
        for check in checks:
            click.echo(check.render())
        click.echo(summary_line(command, checks))
    sys.exit(exit_code(checks))


@click.command("preflight")
@with_appcontext
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object instead of lines.")
@click.option(
    "--hosts",
    type=click.IntRange(min=0),
    default=0,
    help="How many hosts will serve this database (Redis is required for more than one).",
)
@click.option(
    "--new-database",
    is_flag=True,
    help="A first install: a missing SQLite database is a warning (the migration creates it), not a failure.",
)
def preflight_command(json_output: bool, hosts: int, new_database: bool) -> None:
    """Check secrets, database, Redis, Stripe, the webhook endpoint, the API version and the
    clock before a release; one line each, with what to do. Exit 0 ok, 1 warnings, 2 failures."""
    from .preflight import run_preflight

    checks, facts = run_preflight(hosts, new_database)
    _print("preflight", checks, json_output, facts=facts)


def _parse_since(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("an ISO 8601 time, e.g. 2026-12-06T05:00:00Z", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _rate_limit_amount(value: str) -> int:
    from limits import parse_many

    return int(parse_many(value)[0].amount)


@click.command("verify-deploy")
@with_appcontext
@click.option("--url", required=True, help="The service as its clients reach it, e.g. http://127.0.0.1:8000.")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object instead of lines.")
@click.option("--probe-rate-limit", is_flag=True, help="Also post unsigned webhooks until the 429 (adds violations).")
@click.option("--api-key", envvar="KAMIYO_API_KEY", help="API key for the idempotency probe (or KAMIYO_API_KEY).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), help="The service's log file.")
@click.option("--since", help="The release time (ISO 8601); default: the log's last start-up line.")
def verify_deploy_command(
    url: str, json_output: bool, probe_rate_limit: bool, api_key: str | None, log_path: Path | None, since: str | None
) -> None:
    """After a release: health answers, the start-up line, the idempotency probe (test mode
    only), the rate-limit probe (--probe-rate-limit), no ERROR lines since the release.
    Exit 0 ok, 1 warnings, 2 failures."""
    from .verify import run_verify

    config = current_app.config
    if log_path is None and config.get("LOG_FILE"):
        log_path = Path(config["LOG_FILE"])
    checks = run_verify(
        url,
        api_key or None,
        stripe_mode(config),
        log_path,
        _parse_since(since),
        probe_rate_limit,
        _rate_limit_amount(config["WEBHOOK_RATE_LIMIT"]),
    )
    _print("verify-deploy", checks, json_output, url=url)


@click.command("report")
@with_appcontext
@click.option("--since", "since", type=click.Choice(["1h", "1d", "7d"]), default="1h", show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object instead of lines.")
def report_command(since: str, json_output: bool) -> None:
    """The first hour, day or week after a release in numbers, from the database, against the
    checklist's targets. Exit 0 on target, 1 something to look at, 2 a target missed."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..extensions import db
    from .report import build_report

    try:
        checks, numbers = build_report(since)
    except SQLAlchemyError as exc:
        # Unreachable, or not migrated: a failure with the release commands' exit code.
        url = db.engine.url.render_as_string(hide_password=True)
        failed = Check(
            "database",
            FAIL,
            f"cannot read the numbers from {url}: {type(exc).__name__}",
            "flask --app wsgi preflight says why (unreachable, or its migrations)",
        )
        _print("report", [failed], json_output, numbers={})
        return
    _print("report", checks, json_output, numbers=numbers)


def init_app(app: Flask) -> None:
    app.cli.add_command(preflight_command)
    app.cli.add_command(verify_deploy_command)
    app.cli.add_command(report_command)


RELEASE_COMMANDS = ("preflight", "verify-deploy", "report")
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# The service's metrics folder when it was named but does not exist here (set aside before the
# app is made: every metric would open a file in it at import and die).
absent_metrics_dir: str | None = None


def set_aside_absent_metrics_dir() -> None:
    """Before create_app, for the release commands only: a PROMETHEUS_MULTIPROC_DIR that does
    not exist (another host, the service not started since a reboot cleared /run) is dropped
    from this process's environment, and `report` says so in its dedup line."""
    global absent_metrics_dir
    folder = os.environ.get(METRICS_DIR)
    if folder and not os.path.isdir(folder):
        absent_metrics_dir = folder
        del os.environ[METRICS_DIR]


_FLASK_OPTIONS_WITH_VALUES = ("--app", "-A", "--env-file", "-e")


def is_release_command(args: Sequence[str]) -> bool:
    """Whether `flask [options] COMMAND ...` runs one of the release commands."""
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg in _FLASK_OPTIONS_WITH_VALUES:
            rest = rest[1:]
        elif not arg.startswith("-"):
            return arg in RELEASE_COMMANDS
    return False


def config_error_app(error: Exception) -> Flask:
    """The app the release commands get when the configuration does not load: the error as a
    failure with their exit code (2), rather than one line and exit 1, which a pipeline would
    take for warnings; preflight adds the checks that need no app (the secrets, read as the
    service would)."""
    from .. import _new_flask
    from .. import config as config_module

    app = _new_flask()
    raw: dict[str, Any] = dict(config_module.DEFAULTS)
    try:
        app.config.from_pyfile("config.py", silent=True)
        raw.update({k: v for k, v in app.config.items() if k in raw})
    except Exception:  # noqa: BLE001 -- the error below says what is wrong
        pass
    # Setting by setting: the one that stopped the configuration must not hide the others
    # (every secret that is set would be reported "not set").
    for name, value in sorted(os.environ.items(), key=lambda item: item[0].startswith("KAMIYO_")):  # KAMIYO_ wins
        try:
            raw.update(config_module.from_environment({name: value}))
        except config_module.ConfigError:
            pass

    @click.command("preflight")
    @click.option("--json", "json_output", is_flag=True)
    @click.option("--hosts", type=int, default=0)
    @click.option("--new-database", is_flag=True)
    def preflight_without_app(json_output: bool, hosts: int, new_database: bool) -> None:
        checks = [
            Check("configuration", FAIL, f"does not load: {error}", "fix it, then run preflight again"),
            *check_secrets(raw),
        ]
        _print("preflight", checks, json_output)

    app.cli.add_command(preflight_without_app)
    for name in RELEASE_COMMANDS[1:]:
        app.cli.add_command(_failing_command(name, error))
    return app


def _failing_command(name: str, error: Exception) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    @click.option("--json", "json_output", is_flag=True)
    def command(json_output: bool) -> None:
        _print(
            name, [Check("configuration", FAIL, f"does not load: {error}", "fix it, then run it again")], json_output
        )

    return command
