"""Bearer credentials: the one reading of 'Authorization: Bearer <token>' and the one
401 answer, so every guarded endpoint accepts and refuses in the same way."""

from __future__ import annotations

from flask import request

from .http_errors import ApiError


def bearer_token() -> str | None:
    """The token of the request's 'Authorization: Bearer <token>', or None when there is none.

    The scheme is case-insensitive (RFC 7235) and the spaces around the token are not
    part of it; any other scheme (Basic, ...) or an empty token counts as none."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def unauthorized(realm: str, credential: str, placeholder: str, invalid: str | None = None) -> ApiError:
    """The 401 answer for a missing or refused `credential` ("API key") of `realm`.

    `invalid` says why a token that was sent is refused; RFC 6750 asks for
    error="invalid_token" then, and for no error code when none was sent."""
    challenge = f'Bearer realm="{realm}"'
    if invalid is not None:
        challenge += f', error="invalid_token", error_description="{invalid}"'
    return ApiError(
        401,
        "unauthorized",
        f"A valid {credential} is required.",
        f"Send a valid {credential} as 'Authorization: Bearer <{placeholder}>'.",
        headers={"WWW-Authenticate": challenge},
    )
