"""A statement compiled once and run on the DB-API cursor: for the few statements of every C-STORE.

SQLAlchemy's ``Connection.execute`` spends most of its time per statement on the way to the
driver: the statement's cache key, the compiled-cache lookup, an execution context, a result
object. For the three statements each received instance runs (:mod:`db.repository.instances`),
that was about a sixth of a receiving process's Python time with 2 KB instances. On SQLite and on
PostgreSQL through psycopg the statement is compiled once here, and each run only builds its
parameters (SQLAlchemy's own ``construct_params`` and each bind type's own ``bind_processor``, so
values are stored exactly as through ``execute``) and calls the driver within the connection's
transaction (:meth:`db.engine.Database.driver_transaction`, which spares the transaction's own
overhead as well). Other drivers take SQLAlchemy's path unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement


class PreparedStatement:
    """``first(conn, params)``: the statement's first row as a tuple, or None. ``conn`` is the
    driver's connection (:meth:`db.engine.Database.driver_transaction`): ``sqlite3`` (``?``
    parameters in order) or psycopg (``%(name)s`` parameters by name), run with the statement
    compiled here; or a SQLAlchemy connection, run through ``execute``."""

    def __init__(self, statement: Executable, engine: Engine, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        dialect = engine.dialect
        self._qmark = dialect.name == "sqlite" and dialect.paramstyle == "qmark"
        self._named = dialect.driver == "psycopg" and dialect.paramstyle == "pyformat"
        self._compiled: SQLCompiler | None = None
        self._order: list[tuple[str, Callable[[Any], Any] | None]] = []
        self._escaped: dict[str, str] = {}
        if self._qmark or self._named:
            assert isinstance(statement, ClauseElement)
            compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys else None)
            assert isinstance(compiled, SQLCompiler)
            self._compiled = compiled
            if self._qmark:
                assert compiled.positiontup is not None
                self._order = [(name, compiled.binds[name].type.bind_processor(dialect))
                               for name in compiled.positiontup]
            else:  # by the names the statement renders (anonymous binds get theirs at compilation)
                self._order = [(name, bind.type.bind_processor(dialect)) for bind, name in compiled.bind_names.items()]
                self._escaped = dict(compiled.escaped_bind_names)

    def first(self, conn: Any, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        compiled = self._compiled
        if isinstance(conn, Connection):
            row = conn.execute(self.statement, dict(params)).first()
            return tuple(row) if row is not None else None
        if compiled is None:
            raise TypeError("a statement not compiled for the driver runs on a SQLAlchemy connection")
        if isinstance(conn, sqlite3.Connection):
            values = compiled.construct_params(dict(params))
            cursor = conn.execute(compiled.string, [process(values[name]) if process is not None else values[name]
                                                    for name, process in self._order])
        else:
            values = compiled.construct_params(dict(params), escape_names=False)
            cursor = conn.execute(compiled.string, {
                self._escaped.get(name, name): process(values[name]) if process is not None else values[name]
                for name, process in self._order})
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(found) if found is not None else None
