"""Admin actions: each is confirmed on a page of its own, then POSTed with a CSRF token,
and written to the audit log with its outcome.

GET /dashboard/confirm/<action>?target=... shows what will happen; its form POSTs to
/dashboard/actions/<action>. Nothing changes on a GET.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user

from .. import api_keys, audit, scheduler
from ..extensions import db
from ..ops_actions import run_action
from ..payments.queries import RECONCILE_JOB
from ..scheduler import queries as jobs
from ..stripe_gateway.gateway import get_gateway
from ..versioning.queries import RUN_JOB as VERSION_CHECK_JOB
from ..webhooks.queries import REPLAY_ACTION
from .auth import admin_required
from .forms import ConfirmForm, NewApiKeyForm
from .views import chrome, no_store

log = logging.getLogger("kamiyo.dashboard")
PENDING_KEY = "pending_api_key"  # the name confirmed on the create-key page, until it is made

bp = Blueprint("actions", __name__, url_prefix="/dashboard")
bp.context_processor(chrome)
bp.after_request(no_store)


@dataclass(frozen=True)
class Action:
    title: str  # what the confirmation page asks
    explain: str  # what will happen, in the operator's words
    run: Callable[[str], tuple[str, str]]  # target → (outcome, message)
    back: str  # the page to return to
    needs_target: bool = False
    describe: Callable[[str], str] = lambda target: target  # the target, as the confirmation names it


def _run_job(name: str) -> tuple[str, str]:
    if name not in jobs.job_names(current_app):
        return "failed", f"no job named {name!r}"
    status = scheduler.run_now(current_app._get_current_object(), name)  # type: ignore[attr-defined]
    if status is None:
        return "refused", "a run of this job started this second; try again"
    return ("ok", "the job ran") if status == "ok" else ("failed", "the job failed; see the log")


def _reset_breaker(_: str) -> tuple[str, str]:
    breaker = get_gateway().breaker
    before = breaker.current_state
    breaker.reset(by=current_user.email)
    return "ok", f"the breaker was {before}; it is closed now"


def _key_id(raw: str) -> int | None:
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


def _describe_key(key_id: str) -> str:
    found = _key_id(key_id)
    key = api_keys.get_api_key(found) if found is not None else None
    if key is None:
        return f"no key with id {key_id}"
    return f"{key.name} ({key.prefix}...), created {key.created_at:%Y-%m-%d}" + (" - revoked" if key.revoked else "")


def _revoke_key(key_id: str) -> tuple[str, str]:
    found = _key_id(key_id)
    key = api_keys.get_api_key(found) if found is not None else None
    if key is None:
        return "failed", "no such key"
    if key.revoked:
        return "refused", f"{key.name} ({key.prefix}...) was already revoked"
    api_keys.revoke_api_key(str(key.id))
    return "ok", f"revoked {key.name} ({key.prefix}...)"


ACTIONS: dict[str, Action] = {
    "run-version-check": Action(
        "Run the Stripe API version check now?",
        "Asks Stripe which versions are in use, compares them with ours, stores a check and alerts "
        "on a mismatch. The weekly run still happens.",
        lambda _: _run_job(VERSION_CHECK_JOB),
        "dashboard.version",
    ),
    "replay-webhook": Action(
        "Replay this failed webhook event?",
        "Runs the stored event through its handler again. Only a failed event is replayed.",
        lambda event_id: run_action(REPLAY_ACTION, event_id),
        "dashboard.webhook_events",
        needs_target=True,
    ),
    "run-reconcile": Action(
        "Run reconcile now?",
        "Compares our customers and subscriptions with Stripe's, adopts what is ours and reports drift. "
        "Nothing is cancelled or deleted on Stripe.",
        lambda _: _run_job(RECONCILE_JOB),
        "dashboard.payments_page",
    ),
    "reset-breaker": Action(
        "Reset the circuit breaker?",
        "Closes the breaker: the next payment requests go to Stripe at once. If Stripe is still down, "
        "the breaker opens again after its failure count.",
        _reset_breaker,
        "dashboard.breaker",
    ),
    "run-job": Action(
        "Run this scheduled job now?",
        "Runs the job once, outside its schedule; its scheduled run still happens.",
        _run_job,
        "dashboard.jobs_page",
        needs_target=True,
    ),
    "revoke-api-key": Action(
        "Revoke this API key?",
        "Every request with this key is refused from now on. This cannot be undone.",
        _revoke_key,
        "dashboard.api_keys_page",
        needs_target=True,
        describe=_describe_key,
    ),
}


def _action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        abort(404)
    return action


def _target(action: Action, raw: str | None) -> str:
    target = (raw or "").strip()[:255]
    if action.needs_target and not target:
        abort(400)
    return target


@bp.get("/confirm/<name>")
@admin_required
def confirm(name: str):
    action = _action(name)
    target = _target(action, request.args.get("target"))
    return render_template(
        "dashboard/confirm.html",
        name=name,
        action=action,
        target=target,
        described=action.describe(target) if target else "",
        form=ConfirmForm(),
        back=url_for(action.back),
    )


@bp.post("/actions/<name>")
@admin_required
def perform(name: str):
    action = _action(name)
    form = ConfirmForm()
    if not form.validate_on_submit():
        abort(400)
    target = _target(action, request.form.get("target"))
    try:
        outcome, message = action.run(target)
    except Exception:
        log.exception("dashboard action %s failed", name)
        db.session.rollback()  # the audit entry goes in a clean transaction
        outcome, message = "failed", "the action raised an error; see the log"
    audit.record(current_user.email, name, target or "-", outcome, message)
    flash(f"{action.title.rstrip('?')}: {message}", "ok" if outcome == "ok" else "error")
    if name == "replay-webhook":
        return redirect(url_for("dashboard.webhook_event", event_id=target))
    return redirect(url_for(action.back))


@bp.post("/api-keys/new")
@admin_required
def new_api_key():
    """The create form lands here first: a confirmation page, which creates nothing."""
    form = NewApiKeyForm()
    if not form.validate_on_submit():
        if set(form.errors) == {"name"}:
            flash(f"No key created: {form.name.errors[0]}", "error")
            return redirect(url_for("dashboard.api_keys_page"))
        abort(400)
    # One confirmation makes one key: a resubmitted confirmation (a reload) finds none pending.
    session[PENDING_KEY] = form.name.data
    return render_template("dashboard/api_key_confirm.html", form=form, back=url_for("dashboard.api_keys_page"))


@bp.post("/actions/create-api-key")
@admin_required
def create_api_key():
    form = NewApiKeyForm()
    if not form.validate_on_submit():
        abort(400)
    name = form.name.data or ""
    if session.pop(PENDING_KEY, None) != name:
        flash("That confirmation was used already (or has expired): no key was created.", "error")
        return redirect(url_for("dashboard.api_keys_page"))
    try:
        key, plaintext = api_keys.create_api_key(name)
    except ValueError as exc:
        audit.record(current_user.email, "create-api-key", name[:255], "failed", str(exc))
        flash(f"No key created: {exc}", "error")
        return redirect(url_for("dashboard.api_keys_page"))
    audit.record(current_user.email, "create-api-key", f"{key.name} ({key.prefix}...)", "ok")
    # Shown once, on this answer only (no-store): the key itself is not stored.
    response = current_app.make_response(
        render_template("dashboard/api_key_created.html", key=key, plaintext=plaintext)
    )
    response.headers["Cache-Control"] = "no-store"
    return response
