"""Dashboard users: the accounts that may sign in to the ops dashboard."""

from __future__ import annotations

import re

from sqlalchemy import select
from werkzeug.security import generate_password_hash

from .control_chars import CONTROL
from .extensions import db
from .models import DashboardUser

ROLES = ("viewer", "admin")
MIN_PASSWORD_LENGTH = 12
# No whitespace and no control characters anywhere (NUL cannot even be stored in PostgreSQL text).
_EMAIL_CHAR = rf"[^@\s{CONTROL}]"
EMAIL_RE = re.compile(rf"^{_EMAIL_CHAR}{{1,64}}@{_EMAIL_CHAR}{{1,189}}\.{_EMAIL_CHAR}{{2,63}}$")


def create_user(email: str, password: str, role: str = "viewer") -> DashboardUser:
    email = email.strip().lower()
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
