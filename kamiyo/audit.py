"""The audit log: every admin action on the dashboard, who, what, when and the outcome."""

from __future__ import annotations

from collections.abc import Mapping

from flask import request
from sqlalchemy import select

from .control_chars import replace_control
from .extensions import db
from .listing import Page, paginate, text_filter
from .models import AuditEntry

OUTCOMES = ("ok", "failed", "refused")


def record(actor: str, action: str, target: str, outcome: str, detail: str | None = None) -> AuditEntry:
    """Write one entry in its own commit (the action's own writes were committed before)."""
    entry = AuditEntry(
        actor=actor[:254],
        action=action[:64],
        target=replace_control(target, "?")[:255],
        outcome=outcome,
        detail=replace_control(detail, "?")[:500] if detail else None,
        client_ip=(request.remote_addr or "")[:64] or None,
    )
    db.session.add(entry)
    db.session.commit()
    return entry


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
