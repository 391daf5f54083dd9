"""API keys for the JSON API: created by the CLI, stored only as a hash."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from flask import g
from sqlalchemy import or_, select

from . import auth_failures, scopes
from .bearer import bearer_token, unauthorized
from .extensions import db
from .models import ApiKey, utcnow

KEY_PREFIX = "kmy_"
REALM = "kamiyo"
VISIBLE_CHARS = 12  # "kmy_" + 8 random characters: enough to tell keys apart in lists
# Writing last_used_at on every request would make each API call a write;
# once a minute is precise enough for "is this key still in use?".
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def create_api_key(
    name: str, scope_list: Iterable[str] = (), expires_in: dt.timedelta | None = None
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored. Without scopes it is a
    full key; with them, restricted to them (kamiyo/scopes.py)."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("name must be 1 to 128 characters")
    stored_scopes = scopes.normalise(scope_list)
    if expires_in is not None and expires_in <= dt.timedelta(0):
        raise ValueError("an expiry must be in the future")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        key_hash=hash_key(plaintext),
        prefix=plaintext[:VISIBLE_CHARS],
        scopes=stored_scopes,
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    db.session.add(key)
    db.session.commit()
    return key, plaintext


def get_api_key(key_id: int) -> ApiKey | None:
    return db.session.get(ApiKey, key_id)


def list_api_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.id)))


def find_api_key(ident: str) -> ApiKey | None:
    """The key with this numeric id, visible prefix, or whole plaintext (an operator holding a
    leaked key pastes it: found by its hash); None when nothing matches."""
    if ident.startswith(KEY_PREFIX) and len(ident) > VISIBLE_CHARS:
        return db.session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(ident)))
    conditions = [ApiKey.prefix == ident]
    if ident.isdigit():
        conditions.append(ApiKey.id == int(ident))
    matches = list(db.session.scalars(select(ApiKey).where(or_(*conditions))))
    if len(matches) > 1:
        raise ValueError(f"{ident!r} matches {len(matches)} keys; use the numeric id")
    return matches[0] if matches else None


def revoke_api_key(ident: str) -> ApiKey | None:
    """Revoke by numeric id, visible prefix or whole key; returns None when nothing matches. A key
    revoked already keeps its first revocation date."""
    key = find_api_key(ident)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.session.commit()
    return key


def authenticate(plaintext: str) -> ApiKey | None:
    return check_key(plaintext)[0]


UNKNOWN = "unknown or revoked key"
EXPIRED = "expired key"


def check_key(plaintext: str) -> tuple[ApiKey | None, str]:
    """(the key, "") when `plaintext` is a usable key, else (None, why it is refused)."""
    if not plaintext.startswith(KEY_PREFIX):
        return None, UNKNOWN
    digest = hash_key(plaintext)
    key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    # The lookup is by hash already; compare_digest keeps the final check constant-time.
    if key is None or key.revoked or not hmac.compare_digest(key.key_hash, digest):
        return None, UNKNOWN
    now = utcnow()
    if key.expires_at is not None and key.expires_at <= now:
        return None, EXPIRED
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        db.session.commit()
    return key, ""


def request_key(scope: str | None = None) -> ApiKey:
    """The request's API key, which must have `scope` when one is given. Raises the 401
    (missing, unknown, revoked or expired key; a 429 past the per-IP failure limit) or the
    403 insufficient_scope."""
    token = bearer_token()
    if token is None:
        raise auth_failures.refuse("api_key", "no key", unauthorized(REALM, "API key", "key"))
    key, reason = check_key(token)
    if key is None:
        answer = unauthorized(REALM, "API key", "key", invalid=reason)
        if reason == EXPIRED:
            answer.message = "This API key has expired."
            answer.user_action = "Create a new key (flask --app wsgi api-keys create) and use it instead."
        raise auth_failures.refuse("api_key", reason, answer)
    g.api_key_id = key.id
    g.api_key_prefix = key.prefix
    if scope is not None and scope not in scopes.granted(key.scopes):
        raise scopes.insufficient_scope(scope)
    return key


def require_api_key(view):
    """Guard a JSON API view with a Bearer API key of any scope (401 JSON when missing,
    wrong, revoked or expired)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        request_key()
        return view(*args, **kwargs)

    return wrapper


def require_scope(scope: str):
    """Guard a JSON API view with a Bearer API key that has `scope` (else 401, or 403
    insufficient_scope)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            request_key(scope)
            return view(*args, **kwargs)

        return wrapper

    return decorate
