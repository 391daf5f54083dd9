"""Signing in to the dashboard: Flask-Login sessions, roles, the login form's limits.

The login's limits, on refused passwords only: LOGIN_RATE_LIMIT_PER_IP (any account), and
LOGIN_RATE_LIMIT_PER_ACCOUNT per account *and* client (IPv4 address, IPv6 /64), so that
wrong passwords sent from elsewhere cannot lock the account's owner out. Across all clients an
account has a higher ceiling, LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS: past it, a client that
has failed on that account within the hour is answered 429 before its password is checked,
and one with no failures still gets its try (the owner signs in; a guesser spread over many
networks gets one guess per network and hour).

The session stores "<user id>:<session version>": raising the version (logout, disable)
ends every session of the user at once. A session also ends a fixed time after its login,
however busy it is.
"""

from __future__ import annotations

import functools
import logging
import time
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from limits import parse, parse_many

from .. import audit, users
from ..auth_failures import client_bucket, peek
from ..control_chars import has_control
from ..extensions import db, limiter
from ..models import DashboardUser
from ..rate_limits import hit, too_many_requests
from .forms import LoginForm, LogoutForm

log = logging.getLogger("kamiyo.dashboard")

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
LOGIN_FAILED = "Email or password is wrong, or the account is disabled."
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class SessionUser(UserMixin):
    """The signed-in user, as the views see it (not the ORM row: no lazy loads in templates)."""

    def __init__(self, row: DashboardUser) -> None:
        self.id = row.id
        self.email = row.email
        self.role = row.role
        self.session_version = row.session_version

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"


@login_manager.user_loader
def _load_user(session_id: str) -> SessionUser | None:
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    login_at = session.get("login_at")
    if not isinstance(login_at, int | float) or time.time() - login_at > lifetime:
        return None
    row = db.session.get(DashboardUser, int(user_id))
    if row is None or row.disabled_at is not None or row.session_version != int(version):
        return None
    return SessionUser(row)


@login_manager.unauthorized_handler
def _to_login():
    # The path and query only: `next` never names another site.
    here = request.path + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
    return redirect(url_for("auth.login", next=here))


def safe_next(target: str | None) -> str | None:
    """`target` if it is a path on this site, else None (never another host or scheme)."""
    if not target or len(target) > 2048 or has_control(target, beyond_ascii=True):
        return None
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def admin_required(view):
    """Admins only; a viewer is refused with 403, and the refusal is audited."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            return current_app.login_manager.unauthorized()  # type: ignore[attr-defined]
        if not current_user.is_admin:
            if request.method == "POST":
                action = (request.view_args or {}).get("name") or request.endpoint or "?"
                audit.record(current_user.email, str(action), request.path, "refused", "viewer role")
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def _login_email() -> str:
    """The account a login names, however the body was sent (the view refuses all but a form,
    but only after the limit has counted it)."""
    email = request.form.get("email")
    if email is None and request.is_json:
        body = request.get_json(silent=True)
        email = body.get("email") if isinstance(body, dict) else None
    return users.normalise_email(email if isinstance(email, str) else "")[:254]


def _client() -> str:
    return client_bucket(request.remote_addr or "-")


def _login_limit_key() -> str:
    """The account a login names and the client that sends it."""
    return f"login-account:{_login_email()}:{_client()}"


FAILED_FROM = parse("1/hour")  # "this client failed on this account within the hour"


def _ceiling_ids(email: str) -> list[str]:
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    return [prefix, "login-account-all", email] if prefix else ["login-account-all", email]


def _failed_from_ids(email: str) -> list[str]:
    return [*_ceiling_ids(email), _client()]


def _check_account_ceiling(email: str) -> None:
    """Past the account's ceiling across clients, 429 for a client that failed on it lately."""
    no_failure_here, _ = peek(FAILED_FROM, *_failed_from_ids(email))
    if no_failure_here:
        return
    for item in parse_many(current_app.config["LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS"]):
        allowed, reset_at = peek(item, *_ceiling_ids(email))
        if not allowed:
            log.warning(
                "dashboard login refused: the account is over its ceiling of failed logins",
                extra={"client_ip": request.remote_addr, "limit": "LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS"},
            )
            raise too_many_requests(reset_at)


def _count_refused_password(email: str) -> None:
    hit(FAILED_FROM, *_failed_from_ids(email))
    for item in parse_many(current_app.config["LOGIN_RATE_LIMIT_PER_ACCOUNT_ALL_IPS"]):
        hit(item, *_ceiling_ids(email))


def _password_refused(response) -> bool:
    # Only a checked and refused password counts against the account: posts without a token
    # (anyone can send those) must not lock its owner out.
    return response.status_code == 401


def _per_ip() -> str:
    return current_app.config["LOGIN_RATE_LIMIT_PER_IP"]


def _per_account() -> str:
    return current_app.config["LOGIN_RATE_LIMIT_PER_ACCOUNT"]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_per_ip, methods=["POST"])
@limiter.limit(_per_account, key_func=_login_limit_key, methods=["POST"], deduct_when=_password_refused)
def login():
    if request.method == "POST" and request.mimetype not in FORM_TYPES:
        abort(400)  # the sign-in form, nothing else: a JSON body would skip the form's own checks
    form = LoginForm()
    if request.method == "GET":
        form.next.data = safe_next(request.args.get("next")) or ""
    if current_user.is_authenticated and request.method == "GET":
        return redirect(safe_next(request.args.get("next")) or url_for("dashboard.overview"))
    error = None
    status = 200
    if form.validate_on_submit():
        email = users.normalise_email(form.email.data or "")[:254]
        _check_account_ceiling(email)
        row = users.authenticate(form.email.data or "", form.password.data or "")
        if row is not None:
            session.clear()  # a session fixed before the login is not carried into it
            login_user(SessionUser(row))
            session.permanent = True
            session["login_at"] = time.time()
            log.info("dashboard login", extra={"user": row.email, "client_ip": request.remote_addr})
            return redirect(safe_next(form.next.data) or url_for("dashboard.overview"))
        log.warning("dashboard login refused", extra={"client_ip": request.remote_addr})
        _count_refused_password(email)
        error, status = LOGIN_FAILED, 401
    elif request.method == "POST":
        error, status = "The form expired or was incomplete: please sign in again.", 400
    form.password.data = ""
    return render_template("dashboard/login.html", form=form, error=error), status


@bp.post("/logout")
def logout():
    form = LogoutForm()
    if not form.validate_on_submit():
        abort(400)
    if current_user.is_authenticated:
        row = db.session.get(DashboardUser, current_user.id)
        if row is not None:
            users.end_sessions(row)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.overview"))
    return redirect(url_for("auth.login"))


def init_app(app) -> None:
    login_manager.init_app(app)
    login_manager.session_protection = "basic"

    @app.context_processor
    def _logout_form():
        return {"logout_form": LogoutForm()} if current_user.is_authenticated else {}
