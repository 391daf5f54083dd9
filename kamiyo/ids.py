"""Row ids as clients send them, in a URL or a body.

Our ids are PostgreSQL INTEGERs (SQLite raises OverflowError above 2**63-1,
PostgreSQL an error above 2**31-1): one out of range names no row.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import IntegerConverter, Map

MIN_ID = 1
MAX_ID = 2**31 - 1


def valid_id(value: Any) -> bool:
    """A row id in a JSON body: an integer (not a bool) in MIN_ID..MAX_ID."""
    return type(value) is int and MIN_ID <= value <= MAX_ID


class IdConverter(IntegerConverter):
    """`<id:name>` in a route: a row id in MIN_ID..MAX_ID, anything else matches no route (404)."""

    def __init__(self, map: Map) -> None:
        super().__init__(map, min=MIN_ID, max=MAX_ID)
