"""Rollback that is tested: from head with rows in every table, each migration's downgrade, one
revision at a time down to base, keeps every row of the tables and columns it keeps; then the
chain upgrades to head again and matches the models.

The revisions are read from the migration folder and the rows are made from the models' own
tables, so a new migration (and a new table) is covered without touching this file. A column
whose values the generic rule below cannot make (a CHECK this file does not understand, say)
gets its value in SEED_VALUES.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import current_app
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from kamiyo.extensions import db
from tests.integration.test_migrations import differences, empty_database_uri  # noqa: F401
from tests.support import both_databases

pytestmark = both_databases

ROWS_PER_TABLE = 2
# (table, column) -> value for row n, where the generic rule does not fit.
SEED_VALUES: dict[tuple[str, str], Callable[[int], Any]] = {
    # 0012's downgrade spreads a counter of N back into N rows, by design (test_migrations has
    # the case); counters of one keep the rows one to one here.
    ("rate_limit_violations", "count"): lambda n: 1,
}

_IN_LIST = re.compile(r"^\s*\"?(\w+)\"?\s+IN\s*\(\s*'([^']*)'", re.IGNORECASE)
_BASE_TIME = dt.datetime(2026, 11, 1, 10, 0, tzinfo=dt.UTC)


def _allowed_values(table: sa.Table) -> dict[str, str]:
    """`col IN ('a', 'b')` checks: the first value allowed, per column."""
    found = {}
    for constraint in table.constraints:
        if isinstance(constraint, sa.CheckConstraint):
            match = _IN_LIST.match(str(constraint.sqltext))
            if match:
                found[match.group(1)] = match.group(2)
    return found


def _value(table: sa.Table, column: sa.Column, n: int, allowed: dict[str, str]) -> Any:
    if (table.name, column.name) in SEED_VALUES:
        return SEED_VALUES[(table.name, column.name)](n)
    if column.name in allowed:
        return allowed[column.name]
    for fk in column.foreign_keys:
        if fk.column.table is table:  # a row pointing at a row of its own table: none
            return None
        return 1  # the first row of the referred table (every table's ids start at 1)
    kind = column.type
    if isinstance(kind, sa.TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, sa.Boolean):
        return n % 2 == 0
    if isinstance(kind, sa.Integer):
        return n
    if isinstance(kind, sa.Float | sa.Numeric):
        return n + 0.5
    if isinstance(kind, sa.DateTime):
        return _BASE_TIME + dt.timedelta(minutes=n)
    if isinstance(kind, sa.Date):
        return _BASE_TIME.date() + dt.timedelta(days=n)
    if isinstance(kind, sa.JSON):
        return {"n": n}
    if isinstance(kind, sa.LargeBinary):
        return b"seed%d" % n
    if isinstance(kind, sa.String):
        text = f"{column.name[:8]}_{n}"
        return text[: kind.length] if kind.length else text
    raise AssertionError(f"no seed value for {table.name}.{column.name} ({kind!r}): add it to SEED_VALUES")


def seed_every_table() -> None:
    tables = list(db.metadata.sorted_tables)
    with db.engine.begin() as connection:
        for table in tables:
            allowed = _allowed_values(table)
            rows = [{c.name: _value(table, c, n, allowed) for c in table.columns}
                    for n in range(1, ROWS_PER_TABLE + 1)]
            try:
                connection.execute(table.insert(), rows)
            except sa.exc.DBAPIError as exc:
                raise AssertionError(f"cannot seed {table.name}: {exc.orig}; give its column a value in "
                                     "SEED_VALUES") from None
        if connection.dialect.name == "postgresql":  # the ids were given: the sequences move past them
            for table in tables:
                for column in table.primary_key.columns:
                    if not isinstance(column.type, sa.Integer):
                        continue
                    connection.exec_driver_sql(
                        f"SELECT setval(sequence, (SELECT max({column.name}) FROM {table.name})) FROM"
                        f" pg_get_serial_sequence('{table.name}', '{column.name}') AS sequence WHERE sequence IS NOT NULL")


def snapshot() -> dict[str, tuple[list[str], list[tuple]]]:
    """Every table's columns and rows (alembic's own table aside)."""
    found = {}
    with db.engine.connect() as connection:
        for name in inspect(connection).get_table_names():
            if name == "alembic_version":
                continue
            columns = [c["name"] for c in inspect(connection).get_columns(name)]
            rows = connection.execute(sa.text(f'SELECT * FROM "{name}"')).all()
            found[name] = (columns, [tuple(r) for r in rows])
    return found


def _kept(columns: list[str], rows: list[tuple], keep: list[str]) -> list[tuple]:
    index = [columns.index(c) for c in keep]
    return sorted((tuple(row[i] for i in index) for row in rows), key=repr)


def lost_by_downgrade(before: dict, after: dict) -> list[str]:
    problems = []
    for table, (columns, rows) in before.items():
        if table not in after:
            continue  # the downgrade dropped the table: its rows go with it
        after_columns, after_rows = after[table]
        keep = [c for c in columns if c in after_columns]
        if _kept(columns, rows, keep) != _kept(after_columns, after_rows, keep):
            problems.append(f"{table} ({', '.join(keep)}): {_kept(columns, rows, keep)} -> "
                            f"{_kept(after_columns, after_rows, keep)}")
    return problems


def revisions_newest_first() -> list:
    config = current_app.extensions["migrate"].migrate.get_config()
    return list(ScriptDirectory.from_config(config).walk_revisions("base", "heads"))


def test_every_downgrade_keeps_what_it_keeps_down_to_base_and_upgrades_again(make_app, empty_database_uri):  # noqa: F811
    app = make_app(SQLALCHEMY_DATABASE_URI=empty_database_uri)
    with app.app_context():
        upgrade()
        seed_every_table()
        revisions = revisions_newest_first()
        assert len(revisions) >= 12
        seeded = snapshot()
        assert all(len(rows) == ROWS_PER_TABLE for _, rows in seeded.values()), "every table has its rows"
        before = seeded
        for revision in revisions:
            target = revision.down_revision or "base"
            assert not isinstance(target, tuple), f"{revision.revision} merges branches; walk them apart"
            downgrade(revision=target)
            after = snapshot()
            lost = lost_by_downgrade(before, after)
            assert not lost, f"downgrade of {revision.revision} lost or changed rows it keeps:\n" + "\n".join(lost)
            before = after
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert differences(db.engine) == []
        with db.engine.connect() as connection:
            heads = {r.revision for r in revisions if not r.nextrev}
            assert set(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()) == heads
    result = app.test_cli_runner().invoke(args=["db", "check"])
    assert result.exit_code == 0, result.output
