"""API keys for the JSON API: created by the CLI, stored only as a hash."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets

from flask import g
from sqlalchemy import or_, select

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


def create_api_key(name: str) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored."""
    name = name.strip()
    if not name or len(name) > 128:
        raise ValueError("name must be 1 to 128 characters")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name=name, key_hash=hash_key(plaintext), prefix=plaintext[:VISIBLE_CHARS])
    db.session.add(key)
    db.session.commit()
    return key, plaintext


def get_api_key(key_id: int) -> ApiKey | None:
    return db.session.get(ApiKey, key_id)


def list_api_keys() -> list[ApiKey]:
    return list(db.session.scalars(select(ApiKey).order_by(ApiKey.id)))


def find_api_key(ident: str) -> ApiKey | None:
    """The key with this numeric id or visible prefix; None when nothing matches."""
    conditions = [ApiKey.prefix == ident]
    if ident.isdigit():
        conditions.append(ApiKey.id == int(ident))
    matches = list(db.session.scalars(select(ApiKey).where(or_(*conditions))))
    if len(matches) > 1:
        raise ValueError(f"{ident!r} matches {len(matches)} keys; use the numeric id")
    return matches[0] if matches else None


def revoke_api_key(ident: str) -> ApiKey | None:
    """Revoke by numeric id or visible prefix; returns None when nothing matches. A key
    revoked already keeps its first revocation date."""
    key = find_api_key(ident)
    if key is None:
        return None
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        db.session.commit()
    return key


def authenticate(plaintext: str) -> ApiKey | None:
    if not plaintext.startswith(KEY_PREFIX):
        return None
    digest = hash_key(plaintext)
    key = db.session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    # The lookup is by hash already; compare_digest keeps the final check constant-time.
    if key is None or key.revoked or not hmac.compare_digest(key.key_hash, digest):
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
        db.session.commit()
    return key


def require_api_key(view):
    """Guard a JSON API view with a Bearer API key (401 JSON when missing, wrong or revoked)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        if token is None:
            raise unauthorized(REALM, "API key", "key")
        key = authenticate(token)
        if key is None:
            raise unauthorized(REALM, "API key", "key", invalid="unknown or revoked key")
        g.api_key_id = key.id
        g.api_key_prefix = key.prefix
        return view(*args, **kwargs)

    return wrapper
