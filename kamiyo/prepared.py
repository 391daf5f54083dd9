"""Core statements for hot paths: compiled once, run on the DB-API cursor.

SQLAlchemy's `Connection.execute` does Python work on each call (execution
context, result object, events) on top of what the database does; on the
webhook intake that is much of a statement's cost. So its few statements are
compiled once per dialect here and run on the cursor of the connection the
caller already holds: the same SQL, the same type conversions (bind
processors taken from the statement's own types), the same transaction.
`make bench BENCH=webhooks` weighs this against PREPARED_STATEMENTS=false.

Python-side column defaults and onupdates are applied (called without an
execution context); literal values in the statement are bound as compiled.
No result rows beyond `read_one`. Anything else goes through SQLAlchemy.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from flask import current_app, has_app_context
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    positional: bool
    processors: Mapping[str, Callable[[Any], Any]]
    fixed: Mapping[str, Any]  # literals in the statement (`status != 'canceled'`)
    defaults: Mapping[str, Any]  # the columns' Python-side default / onupdate, when not given

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {**self.fixed, **given}
        for name, default in self.defaults.items():
            if name not in given:
                values[name] = default.arg(None) if default.is_callable else default.arg
        for name, processor in self.processors.items():  # once a name, however often it is bound
            values[name] = processor(values[name])
        if self.positional:
            return tuple(values[name] for name in self.names)
        return {name: values[name] for name in self.names}


class Prepared:
    """One statement; `execute` and `read_one` take plain dicts of bind values."""

    def __init__(self, statement: ClauseElement, column_keys: Iterable[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._by_dialect: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            # SQLCompiler's attributes, which the base Compiled type does not declare.
            compiled: Any = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            names = tuple(compiled.positiontup or compiled.binds)
            # Defaults SQLAlchemy would compute in Python (`updated_at` onupdate=utcnow); callables
            # that need the execution context are not supported here.
            defaults = {column.key: column.default for column in compiled.insert_prefetch}
            defaults.update({column.key: column.onupdate for column in compiled.update_prefetch})
            processors, fixed = {}, {}
            for name in names:
                bind = compiled.binds[name]
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors[name] = processor
                if not bind.required and name not in defaults:
                    fixed[name] = bind.effective_value
            found = self._by_dialect[dialect.name] = _Compiled(
                str(compiled), names, compiled.positiontup is not None, processors, fixed, defaults
            )
        return found

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> int:
        """Run once in the connection's transaction; returns the number of rows it changed."""
        if not _enabled():
            return connection.execute(cast(Executable, self.statement), dict(values)).rowcount
        try:
            return self._run(connection.dialect, connection.connection, values, fetch=False)
        except DBAPIError as exc:
            if exc.connection_invalidated:  # as SQLAlchemy would: the Session can then roll back
                connection.invalidate(exc.orig)
            raise

    def read_one(self, engine: Engine, values: Mapping[str, Any]) -> tuple | None:
        """A read of committed data, outside any transaction of the caller's.

        A connection found dead is dropped and the read tried once more on a new one."""
        if not _enabled():
            with engine.connect() as connection:
                row = connection.execute(cast(Executable, self.statement), dict(values)).first()
                return tuple(row) if row is not None else None
        sqlite = engine.dialect.name == "sqlite"
        for last_try in (False, True):
            # SQLite: this thread's reader. Else pooled, and handed back rolled back.
            dbapi_connection = _sqlite_reader(engine) if sqlite else engine.raw_connection()
            try:
                return self._run(engine.dialect, dbapi_connection, values, fetch=True)
            except DBAPIError as exc:
                if not exc.connection_invalidated or last_try:
                    raise
                if sqlite:
                    _readers.by_engine.pop(engine, None)
                else:
                    dbapi_connection.invalidate(exc.orig)
            finally:
                if not sqlite:
                    dbapi_connection.close()
        raise AssertionError("unreachable")

    def _run(self, dialect: Dialect, dbapi_connection, values: Mapping[str, Any], fetch: bool):
        compiled = self.compiled(dialect)
        parameters = compiled.parameters(values)
        cursor = None
        try:
            cursor = dbapi_connection.cursor()  # inside: a closed connection fails here already
            cursor.execute(compiled.sql, parameters)
            return cursor.fetchone() if fetch else cursor.rowcount
        except dialect.loaded_dbapi.Error as exc:
            # The exceptions SQLAlchemy would raise (IntegrityError and the like), for the callers'
            # handlers, marked as SQLAlchemy marks a lost connection. Parameters left out of the
            # message: they carry event payloads.
            raise DBAPIError.instance(
                compiled.sql,
                parameters,
                exc,
                dialect.loaded_dbapi.Error,
                hide_parameters=True,
                dialect=dialect,
                connection_invalidated=dialect.is_disconnect(exc, dbapi_connection, cursor),
            ) from exc
        finally:
            if cursor is not None:
                cursor.close()


def _enabled() -> bool:
    """PREPARED_STATEMENTS off: the same statements through SQLAlchemy (and its compiled cache)."""
    return not has_app_context() or bool(current_app.config.get("PREPARED_STATEMENTS", True))


_readers = threading.local()


def _sqlite_reader(engine: Engine):
    """This thread's own SQLite connection for `read_one`, kept open.

    A pool checkout and return costs more than the read itself (and more with
    many threads). The connection comes from the engine (its connect
    arguments and pragmas) and is detached from the pool, so it takes no pool
    slot. No transaction stays open on it: a SELECT in autocommit ends its
    read transaction when the cursor closes, so it never holds back a WAL
    checkpoint or sees an old snapshot.
    """
    by_engine = getattr(_readers, "by_engine", None)
    if by_engine is None or _readers.pid != os.getpid():
        by_engine = _readers.by_engine = weakref.WeakKeyDictionary()
        _readers.pid = os.getpid()
    reader = by_engine.get(engine)
    if reader is None:
        pooled = engine.raw_connection()
        pooled.detach()
        reader = by_engine[engine] = pooled.dbapi_connection
    return reader
