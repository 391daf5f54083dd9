"""Correlation ids: the id is echoed to clients (X-Request-ID, support_id) and
written to logs, so a client-supplied id is cut down to a safe alphabet first."""

from __future__ import annotations

import re
import uuid

# Explicit ASCII ranges (not \w, which admits any Unicode letter or digit).
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)
MIN_LENGTH = 8
MAX_LENGTH = 64


def _survives_redaction(value: str) -> bool:
    # Digit groups of a UUID joined by '-' can pass Luhn and would be masked as
    # a card number in the logs; an id that the log cannot show unchanged is useless.
    from .logging import redact

    return redact(value) == value


def new_correlation_id() -> str:
    while True:
        candidate = str(uuid.uuid4())
        if _survives_redaction(candidate):
            return candidate


def sanitize_correlation_id(request_id: str | None) -> str:
    """Keep [A-Za-z0-9_-], cut to 64 chars; anything shorter than 8 (or that the
    log redaction would alter, such as a card number) gets a fresh uuid4."""
    if not isinstance(request_id, str) or not request_id:
        return new_correlation_id()
    sanitized = _UNSAFE.sub("", request_id)[:MAX_LENGTH]
    if len(sanitized) < MIN_LENGTH or not _survives_redaction(sanitized):
        return new_correlation_id()
    return sanitized
