"""The audit log (table audit_events): every admin and key-management action, on the
dashboard or the CLI: who, what, on what, the outcome, from where and when.

A dashboard action's actor is the user's email and its IP the client's; a command's actor
is "cli:<OS user>" (under sudo "cli:<operator> (as <OS user>)") and its IP null. Target and
detail go through the log redaction: an operator may paste a key where a name was asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from collections.abc import Iterator, Mapping

import click
from flask import has_request_context, request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from .control_chars import replace_control
from .extensions import db
from .listing import Page, paginate, text_filter
from .models import AuditEntry
from .observability.logging import redact

log = logging.getLogger("kamiyo.audit")

OUTCOMES = ("ok", "failed", "refused")


def record(actor: str, action: str, target: str, outcome: str, detail: str | None = None) -> AuditEntry:
    """Write one entry in its own commit (the action's own writes were committed before)."""
    entry = AuditEntry(
        actor=actor[:254],
        action=action[:64],
        target=replace_control(redact(target), "?")[:255],
        outcome=outcome,
        detail=replace_control(redact(detail), "?")[:500] if detail else None,
        client_ip=((request.remote_addr or "")[:64] or None) if has_request_context() else None,
    )
    db.session.add(entry)
    db.session.commit()
    return entry


def cli_actor() -> str:
    """ "cli:<OS user>", from the process's real uid (not $USER, which anyone sets).

    Operators run commands as the service's user (`sudo -u kamiyo ...`, the database being
    theirs alone), so under sudo the operator sudo names comes first: "cli:alice (as kamiyo)".
    SUDO_USER can be set by hand, which is why the real uid's user is always kept beside it."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (a container's, say)
        name = f"uid{uid}"
    operator = replace_control(os.environ.get("SUDO_USER", "").strip(), "?")[:64]
    if operator and operator != name:
        return f"cli:{operator} (as {name})"
    return f"cli:{name}"


class CliAction:
    """What a command tells its audit entry: the target once known, a detail."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.detail: str | None = None


@contextlib.contextmanager
def cli_action(action: str, target: str) -> Iterator[CliAction]:
    """Audit the command run inside: ok when it ends normally (or exits 0), refused when it
    stops at a usage error or an unconfirmed prompt, failed otherwise. The exception goes on."""
    entry = CliAction(target)
    outcome, detail = "ok", None
    try:
        yield entry
    except (click.UsageError, click.Abort) as exc:
        outcome, detail = "refused", str(exc) or type(exc).__name__
        raise
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            outcome, detail = "failed", f"exit status {exc.exit_code}"
        raise
    except SystemExit as exc:
        if exc.code not in (0, None):
            outcome, detail = "failed", f"exit status {exc.code}"
        raise
    except click.ClickException as exc:
        outcome, detail = "failed", exc.format_message()
        raise
    except Exception as exc:
        outcome, detail = "failed", type(exc).__name__
        raise
    finally:
        _record_cli(action, entry.target, outcome, entry.detail if detail is None else detail)


def _record_cli(action: str, target: str, outcome: str, detail: str | None) -> None:
    try:
        db.session.rollback()  # a clean transaction, whatever the command left behind
        record(cli_actor(), action, target or "-", outcome, detail)
    except SQLAlchemyError as exc:
        # The command's own answer (or error) still reaches the operator; the log says why
        # the audit entry is missing.
        log.error("audit entry not written for %s %s: %s", action, outcome, type(exc).__name__)
        db.session.rollback()


def entries(args: Mapping[str, str]) -> Page:
    filters = {
        "actor": text_filter(args, "actor"),
        "action": text_filter(args, "action"),
        "outcome": text_filter(args, "outcome", OUTCOMES),
    }
    query = select(AuditEntry)
    for name, value in filters.items():
        if value:
            query = query.where(getattr(AuditEntry, name) == value)
    page = paginate(query, AuditEntry.id, args)
    page.filters = {name: value for name, value in filters.items() if value}
    return page
