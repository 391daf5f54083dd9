"""Dashboard users: the accounts that may sign in to the ops dashboard."""

from __future__ import annotations

import re

from sqlalchemy import select, update
from werkzeug.security import check_password_hash, generate_password_hash

from .control_chars import CONTROL
from .extensions import db
from .models import DashboardUser, utcnow

ROLES = ("viewer", "admin")
MIN_PASSWORD_LENGTH = 12
# No whitespace and no control characters anywhere (NUL cannot even be stored in PostgreSQL text).
_EMAIL_CHAR = rf"[^@\s{CONTROL}]"
EMAIL_RE = re.compile(rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}{{1,189}}\.{_EMAIL_CHAR}{{2,63}}$")


def create_user(email: str, password: str, role: str = "viewer") -> DashboardUser:
    email = normalise_email(email)
    if not EMAIL_RE.fullmatch(email):
        raise ValueError("that does not look like an email address")
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")
    if db.session.scalar(select(DashboardUser).where(DashboardUser.email == email)):
        raise ValueError(f"a user with email {email} already exists")
    user = DashboardUser(email=email, password_hash=generate_password_hash(password), role=role)
    db.session.add(user)
    db.session.commit()
    return user


# Checked when the email is unknown, so that an unknown email and a wrong password cost the
# same hash and answer alike: the login does not tell which emails have accounts.
_NO_SUCH_USER_HASH = generate_password_hash("no such user: this hash only spends the time")


def normalise_email(email: str) -> str:
    return email.strip().lower()


def authenticate(email: str, password: str) -> DashboardUser | None:
    """The user for this email and password, if enabled; one password hash either way."""
    user = db.session.scalar(select(DashboardUser).where(DashboardUser.email == normalise_email(email)[:254]))
    ok = check_password_hash(user.password_hash if user else _NO_SUCH_USER_HASH, password)
    if user is None or not ok or user.disabled_at is not None:
        return None
    return user


def list_users() -> list[DashboardUser]:
    return list(db.session.scalars(select(DashboardUser).order_by(DashboardUser.id)))


def disable_user(email: str) -> DashboardUser | None:
    """Disable the account and end its sessions now (every browser, every worker)."""
    user = db.session.scalar(select(DashboardUser).where(DashboardUser.email == normalise_email(email)))
    if user is None:
        return None
    if user.disabled_at is None:
        user.disabled_at = utcnow()
    user.session_version += 1
    db.session.commit()
    return user


def end_sessions(user: DashboardUser) -> None:
    """Every session of this user ends (logout ends them all: a copied cookie dies too)."""
    db.session.execute(
        update(DashboardUser)
        .where(DashboardUser.id == user.id)
        .values(session_version=DashboardUser.session_version + 1)
    )
    db.session.commit()
