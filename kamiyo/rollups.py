"""Per-minute counts of append-only tables, so that a chart or a 24 h count costs the same
with a million rows as with a thousand.

A feature registers a source (a table, its time column and a key expression such as the
outcome) at init_app. The `rollup-minutes` job counts each closed minute once into
`minute_counts`; a reader sums those and counts the few minutes since then (the tail)
from the table itself, so its answer equals a count of the table whether the job ran or
not. Only rows that never change once their minute is closed belong here: a later update
would not reach the minute already counted. A source whose rows are counters themselves
names its count column (`amount`), which is summed instead of counting rows.

A minute is closed GRACE after its end: a row stamped in it but committed late (a slow
transaction) is still counted. The tail a reader counts is at most GRACE plus the job's
interval: the smaller, the cheaper every page.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import ColumnElement, Integer, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import Model, db
from .listing import TimeRange, bucket_index
from .models import UTCDateTime, utcnow

log = logging.getLogger(__name__)

SOURCES_KEY = "kamiyo_rollup_sources"
JOB = "rollup-minutes"
EVERY_MINUTES = 2
# Each source's rows commit at once in their own short transaction (a Stripe attempt's record,
# a webhook batch, a violation), within the 5 s lock and busy timeouts: 2 minutes is ample.
GRACE = dt.timedelta(minutes=2)
MINUTE = dt.timedelta(minutes=1)
FIRST_ROLLUP = dt.timedelta(days=31)  # a new install counts back this far: the longest view is 30 d


class MinuteCount(Model):
    __tablename__ = "minute_counts"
    __table_args__ = (UniqueConstraint("source", "minute", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    minute: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    key: Mapped[str] = mapped_column(String(64), nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False)


class RollupMark(Model):
    """Every minute before `rolled_until` is in minute_counts, for this source."""

    __tablename__ = "rollup_marks"

    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    rolled_until: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)


@dataclass(frozen=True)
class Source:
    name: str
    time_column: Any  # an indexed, timezone-aware column
    key: Callable[[], ColumnElement]  # a string expression per row: what a reader can tell apart
    where: Callable[[], Sequence[ColumnElement]] = field(default=lambda: ())
    amount: Callable[[], ColumnElement] | None = None  # what a row counts for, when not 1


def _tally(source: Source) -> ColumnElement:
    return func.sum(source.amount()) if source.amount is not None else func.count()


def register_source(app: Flask, source: Source) -> None:
    app.extensions.setdefault(SOURCES_KEY, {})[source.name] = source


def _source(name: str) -> Source:
    return current_app.extensions[SOURCES_KEY][name]


def _floor_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


def roll_up(now: dt.datetime | None = None) -> dict[str, int]:
    """Count every closed minute not yet counted, for each source; returns minutes counted."""
    now = now or utcnow()
    until = _floor_minute(now - GRACE)
    done: dict[str, int] = {}
    for name, source in current_app.extensions.get(SOURCES_KEY, {}).items():
        mark = db.session.get(RollupMark, name)
        start = mark.rolled_until if mark else _floor_minute(now - FIRST_ROLLUP)
        if start >= until:
            done[name] = 0
            continue
        key = source.key().label("key")
        minute_number = bucket_index(source.time_column, start, MINUTE).label("m")
        rows = db.session.execute(
            select(minute_number, key, _tally(source))
            .where(source.time_column >= start, source.time_column < until, *source.where())
            .group_by(minute_number, key)
        ).all()
        db.session.add_all(
            MinuteCount(source=name, minute=start + MINUTE * int(m), key=str(k)[:64], count=int(n)) for m, k, n in rows
        )
        if mark is None:
            db.session.add(RollupMark(source=name, rolled_until=until))
        else:
            mark.rolled_until = until
        db.session.commit()  # the counts and the mark together: a crash counts nothing twice
        done[name] = int((until - start) / MINUTE)
    return done


def counts(name: str, window: TimeRange, group: Callable[[str], str | None] = lambda key: key) -> dict[str, list[int]]:
    """Rows per bucket of the window, per group of keys (`group` maps a key to its line, or
    None to leave it out): the counted minutes, then the tail from the table."""
    memo = g.setdefault("kamiyo_rollup_counts", {})  # a page asks for its totals and its chart
    if (name, window) not in memo:
        memo[(name, window)] = _counts(name, window)
    return {line: list(values) for line, values in _grouped(memo[(name, window)], group).items()}


def _grouped(by_key: dict[str, list[int]], group: Callable[[str], str | None]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for key, values in by_key.items():
        line = group(key)
        if line is not None:
            found[line] = [a + b for a, b in zip(found.get(line, [0] * len(values)), values, strict=True)]
    return found


def _ceil_minute(moment: dt.datetime) -> dt.datetime:
    floor = _floor_minute(moment)
    return floor if floor == moment else floor + MINUTE


def _counts(name: str, window: TimeRange) -> dict[str, list[int]]:
    """The whole minutes inside the window that the job counted, from minute_counts; the rest
    from the table: the tail since the job's mark, and the parts of minutes the window cuts
    (a window that starts or ends mid-minute, as `report`'s does: a counted minute holds rows
    on both sides of the edge)."""
    source = _source(name)
    mark = db.session.get(RollupMark, name)
    rolled_until = mark.rolled_until if mark else window.start
    counted_from = _ceil_minute(window.start)
    counted_until = max(counted_from, min(rolled_until, _floor_minute(window.end)))
    found: dict[str, list[int]] = {}

    def add(key: str, bucket: int, n: int) -> None:
        if 0 <= bucket < window.buckets:
            found.setdefault(key, [0] * window.buckets)[bucket] += n

    raw = [(window.start, window.end)]
    if counted_until > counted_from:
        bucket = bucket_index(MinuteCount.minute, window.start, window.bucket).label("b")
        for b, key, n in db.session.execute(
            select(bucket, MinuteCount.key, func.sum(MinuteCount.count))
            .where(MinuteCount.source == name, MinuteCount.minute >= counted_from, MinuteCount.minute < counted_until)
            .group_by(bucket, MinuteCount.key)
        ):
            add(str(key), int(b), int(n))
        raw = [(window.start, counted_from), (counted_until, window.end)]
    bucket = bucket_index(source.time_column, window.start, window.bucket).label("b")
    key = source.key().label("key")
    for start, end in raw:
        if end <= start:
            continue
        for b, k, n in db.session.execute(
            select(bucket, key, _tally(source))
            .where(source.time_column >= start, source.time_column < end, *source.where())
            .group_by(bucket, key)
        ):
            add(str(k), int(b), int(n))
    return found


def totals(name: str, window: TimeRange) -> dict[str, int]:
    """Rows in the window per key."""
    return {key: sum(values) for key, values in counts(name, window).items()}


def init_app(app: Flask) -> None:
    from apscheduler.triggers.cron import CronTrigger

    from . import scheduler

    scheduler.register_job(
        app,
        JOB,
        CronTrigger(minute=f"*/{EVERY_MINUTES}", timezone=app.config["SCHEDULER_TIMEZONE"]),
        roll_up,
        scheduler.every_minutes(EVERY_MINUTES),
    )
