"""Correlation ids: the id is echoed to clients (X-Request-ID, support_id) and
written to logs, so a client-supplied id is cut down to a safe alphabet first."""

from __future__ import annotations

import re
import uuid

# Explicit ASCII ranges (not \w, which admits any Unicode letter or digit).
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]", re.ASCII)
MIN_LENGTH = 8
MAX_LENGTH = 64


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def sanitize_correlation_id(request_id: str | None) -> str:
    """Keep [A-Za-z0-9_-], cut to 64 chars; anything shorter than 8 gets a fresh uuid4."""
    if not isinstance(request_id, str) or not request_id:
        return new_correlation_id()
    sanitized = _UNSAFE.sub("", request_id)[:MAX_LENGTH]
    if len(sanitized) < MIN_LENGTH:
        return new_correlation_id()
    return sanitized
