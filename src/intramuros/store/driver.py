"""Fixed statements run on the database driver's own cursor: the call records' hot path.

Every answered call waits for its records to commit (the request log, the
day's usage and metering, the ledger record). SQLAlchemy's execution layer
costs some twenty microseconds of Python per statement, held under the
interpreter lock, on top of what the driver does: more than the statements
themselves. A :class:`DriverStatement` statement is compiled by SQLAlchemy once per
dialect and set of parameter names, then run with the DB-API cursor of the
caller's connection, in the caller's transaction. Parameters go through the
column types' bind processors, as SQLAlchemy would send them; driver errors
come back as SQLAlchemy's exceptions, so callers handle them as before.

Only for statements built from our table definitions with plain parameters
(``insert()``, ``update().where(...).values(...)``, a ``select`` without
parameters but its own literals).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Parameter names in the order the driver takes them (None: by name).
    order: tuple[str, ...] | None
    processors: dict[str, Callable[[Any], Any]]
    defaults: dict[str, Any]


class DriverStatement:
    """A Core statement compiled once per dialect, run on the DB-API cursor."""

    def __init__(self, stmt: ClauseElement) -> None:
        self.stmt = stmt
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}
        self._lock = threading.Lock()

    def execute(self, conn: Connection, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
                = ()) -> int:  # fmt: skip
        """Run with one set of parameters (a mapping) or many (a sequence of mappings, as
        one ``executemany``); the number of rows affected."""
        rows = [params] if isinstance(params, Mapping) else list(params)
        if not rows:
            return 0
        compiled = self._for(conn.dialect, tuple(rows[0]))
        args = [_args(compiled, row) for row in rows]
        with _cursor(conn, compiled.sql, args) as cursor:
            if isinstance(params, Mapping):
                cursor.execute(compiled.sql, args[0])
            else:
                cursor.executemany(compiled.sql, args)
            return int(cursor.rowcount)

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        """The first row of a query (a tuple), or None."""
        compiled = self._for(conn.dialect, tuple(params or ()))
        args = _args(compiled, params or {})
        with _cursor(conn, compiled.sql, args) as cursor:
            cursor.execute(compiled.sql, args)
            return cursor.fetchone()

    def _for(self, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled:
        key = (dialect.name, keys)
        found = self._compiled.get(key)
        if found is not None:
            return found
        compiled = self.stmt.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        processors: dict[str, Callable[[Any], Any]] = {}
        defaults: dict[str, Any] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                processors[name] = processor
            if name not in keys:
                if bind.value is None:
                    # A column default SQLAlchemy would fill in: not for this helper.
                    raise ValueError(f"statement parameter {name!r} not given: {compiled}")
                defaults[name] = bind.value  # a literal of the statement (LIMIT 1)
        positional = getattr(compiled, "positiontup", None)
        made = _Compiled(str(compiled), tuple(positional) if compiled.positional and positional
                         is not None else None, processors, defaults)  # fmt: skip
        with self._lock:
            self._compiled[key] = made
        return made


def driver_sql(conn: Connection, sql: str) -> None:
    """Run a literal statement without parameters (``BEGIN IMMEDIATE``, ``COMMIT``) on the
    DB-API cursor of ``conn``; driver errors as SQLAlchemy's."""
    with _cursor(conn, sql, ()) as cursor:
        cursor.execute(sql)


@contextmanager
def _cursor(conn: Connection, sql: str, args: Any) -> Iterator[Any]:
    """A cursor of ``conn``'s driver connection, closed after; driver errors raised as
    SQLAlchemy's (``sql`` and ``args`` name the statement in them)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        yield cursor
    except conn.dialect.loaded_dbapi.Error as exc:
        raise sa_exc.DBAPIError.instance(sql, args, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()


def _args(compiled: _Compiled, row: Mapping[str, Any]) -> Any:
    values = {**compiled.defaults, **row} if compiled.defaults else dict(row)
    for name, processor in compiled.processors.items():
        if name in values:
            values[name] = processor(values[name])
    if compiled.order is None:
        return values
    return tuple(values.get(name) for name in compiled.order)
