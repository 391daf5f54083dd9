"""What every list and chart shares, for the dashboard and the ops API alike: the time
range, filters read from the query string, keyset pagination and per-bucket counts.

Every query is bounded by time (the range) and by a page size, so a page costs the same
with a thousand rows as with millions: an index range scan, never a full count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, Select, func, literal, select

from .control_chars import has_control
from .extensions import db
from .http_errors import ApiError
from .models import utcnow

# name → (length, bucket width): 60 one-minute, 48 half-hour, 84 two-hour and 120 six-hour buckets.
RANGES: dict[str, tuple[dt.timedelta, dt.timedelta]] = {
    "1h": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=30)),
    "7d": (dt.timedelta(days=7), dt.timedelta(hours=2)),
    "30d": (dt.timedelta(days=30), dt.timedelta(hours=6)),  # as long as events and violations are kept
}
DEFAULT_RANGE = "24h"
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
FILTER_MAX = 255  # characters of a filter value: longer than any column it is compared with


@dataclass(frozen=True)
class TimeRange:
    name: str
    start: dt.datetime
    end: dt.datetime
    bucket: dt.timedelta

    @property
    def buckets(self) -> int:
        return int((self.end - self.start) / self.bucket)


def time_range(name: str | None, now: dt.datetime | None = None) -> TimeRange:
    name = name or DEFAULT_RANGE
    if name not in RANGES:
        raise ApiError(400, "invalid_range", f"Unknown time range {name[:16]!r}.", f"Use one of {', '.join(RANGES)}.")
    length, bucket = RANGES[name]
    end = now or utcnow()
    # The end is rounded up to a whole bucket, so that bucket edges do not move on each refresh.
    width = bucket.total_seconds()
    end = dt.datetime.fromtimestamp((end.timestamp() // width + 1) * width, dt.UTC)
    return TimeRange(name, end - length, end, bucket)


def text_filter(args: Mapping[str, str], name: str, choices: Sequence[str] | None = None) -> str | None:
    """A filter value from the query string: empty means none; a closed set is checked."""
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if len(value) > FILTER_MAX or has_control(value, beyond_ascii=True):
        raise ApiError(400, "invalid_filter", f"The filter {name!r} is not valid.", "Use printable text.")
    if choices is not None and value not in choices:
        raise ApiError(400, "invalid_filter", f"Unknown {name} {value[:32]!r}.", f"Use one of {', '.join(choices)}.")
    return value


def id_arg(args: Mapping[str, str], name: str) -> int | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(400, "invalid_cursor", f"{name} must be a row id.", "Follow the page links as given.")
    return int(value)


@dataclass
class Page:
    """Newest first. `before`/`after` are the cursors of the next (older) and previous (newer) pages."""

    rows: list[Any]
    older: int | None = None
    newer: int | None = None
    filters: dict[str, str] = field(default_factory=dict)


def paginate(
    query: Select, id_column: Any, args: Mapping[str, str], time_column: Any = None, size: int = PAGE_SIZE
) -> Page:
    """Keyset pagination, newest first: `?before=ID` for older rows, `?after=ID` for newer.

    With `time_column`, rows are ordered by (time, id), so that the time index that bounds the
    range also gives the order (ordering by id alone would sort every row in the range);
    the cursor stays a row id, resolved to its time."""
    before, after = id_arg(args, "before"), id_arg(args, "after")
    keys = [time_column, id_column] if time_column is not None else [id_column]

    def beyond(cursor: int, older: bool) -> ColumnElement:
        if time_column is None:
            return id_column < cursor if older else id_column > cursor
        moment = db.session.scalar(select(time_column).where(id_column == cursor))
        if moment is None:
            return id_column < cursor if older else id_column > cursor  # purged meanwhile: near enough
        # The outer bound alone is what an index range can use; the OR settles equal times.
        if older:
            return (time_column <= moment) & ((time_column < moment) | (id_column < cursor))
        return (time_column >= moment) & ((time_column > moment) | (id_column > cursor))

    if after is not None:
        query = query.where(beyond(after, older=False)).order_by(*(key.asc() for key in keys))
        rows = list(db.session.scalars(query.limit(size + 1)))
        more_newer = len(rows) > size
        rows = list(reversed(rows[:size]))
        return Page(rows, older=rows[-1].id if rows else None, newer=rows[0].id if rows and more_newer else None)
    if before is not None:
        query = query.where(beyond(before, older=True))
    rows = list(db.session.scalars(query.order_by(*(key.desc() for key in keys)).limit(size + 1)))
    page = Page(rows[:size])
    page.older = rows[size - 1].id if len(rows) > size else None
    page.newer = rows[0].id if rows and before is not None else None
    return page


def bucket_index(column: Any, start: dt.datetime, width: dt.timedelta) -> ColumnElement:
    """Which bucket of `width` since `start` a timestamp falls in (rows before `start` excluded
    by the caller). Whole seconds in integers: a float would put a row stamped exactly on an
    edge in the bucket before."""
    seconds = int(width.total_seconds())
    if db.engine.dialect.name == "postgresql":
        return func.floor(func.extract("epoch", column - literal(start)) / seconds)
    # SQLite stores UTC text without an offset; strftime('%s') reads it as whole seconds.
    offset = int(start.timestamp())
    return (func.cast(func.strftime("%s", column), db.Integer) - offset) // seconds


def series(
    column: Any, window: TimeRange, where: Sequence[ColumnElement] = (), group: Any = None
) -> dict[str, list[int]]:
    """Rows per bucket over the range, one list per value of `group` (or "all")."""
    index = bucket_index(column, window.start, window.bucket).label("bucket")
    label = (group if group is not None else literal("all")).label("series")
    query = (
        select(label, index, func.count())
        .where(column >= window.start, column < window.end, *where)
        .group_by(label, index)
    )
    found: dict[str, list[int]] = {}
    for name, bucket, count in db.session.execute(query):
        values = found.setdefault(str(name), [0] * window.buckets)
        position = int(bucket)
        if 0 <= position < window.buckets:
            values[position] += int(count)
    return found


def count(column: Any, since: dt.datetime, where: Sequence[ColumnElement] = ()) -> int:
    return int(db.session.scalar(select(func.count()).where(column >= since, *where)) or 0)


CURSOR_ARGS = ("before", "after")


def same_page(path: str, args: Mapping[str, str], **changes: Any) -> str:
    """This page's URL with its query string changed: None drops a name. Built from the query
    string rather than through url_for, whose own arguments (endpoint, _external, _method...)
    a query string must not be able to set."""
    merged = {name: value for name, value in args.items() if name not in CURSOR_ARGS}
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    return path + ("?" + urlencode(merged) if merged else "")
