"""Which database errors are worth another try: the one place that tells passing trouble from a bug.

A task that meets a locked SQLite file, a PostgreSQL serialization failure or deadlock, or a
connection lost mid-transaction will very likely succeed when run again a little later; "no such
table" or a constraint violation will not. The worker turns a transient error into a Celery retry
with back-off (:class:`worker.errors.TransientError`) and anything else into a parked job.

The checks read the error chain (SQLAlchemy's wrapper, its ``orig`` DB-API error, ``__cause__``)
by SQLite's result codes and PostgreSQL's SQLSTATE, so neither driver has to be imported here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

SQLITE_BUSY_CODES = frozenset({5, 6, 15})
"""SQLITE_BUSY, SQLITE_LOCKED, SQLITE_PROTOCOL (a WAL lock race): another connection holds the file."""

SQLITE_BUSY_WORDS = ("database is locked", "database table is locked", "database is busy")

PG_TRANSIENT_SQLSTATES = frozenset({
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "53300",  # too_many_connections
    "57P01", "57P02", "57P03",  # admin_shutdown, crash_shutdown, cannot_connect_now
})
"""PostgreSQL errors that a new transaction may not meet; class 08 (connection exception) as well."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


def _sqlite_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in SQLITE_BUSY_CODES:
        return True
    message = str(exc).lower()
    return any(words in message for words in SQLITE_BUSY_WORDS)


def _postgres_transient(exc: BaseException) -> bool:
    if not type(exc).__module__.startswith("psycopg"):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:  # psycopg raises OperationalError without a SQLSTATE when the connection fails
        return type(exc).__name__ == "OperationalError"
    return sqlstate in PG_TRANSIENT_SQLSTATES or sqlstate.startswith("08")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a database or network failure that may pass."""
    for error in _chain(exc):
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, (PoolTimeout, DisconnectionError, ConnectionError, TimeoutError)):
            return True
        if isinstance(error, sqlite3.Error) and _sqlite_busy(error):
            return True
        if _postgres_transient(error):
            return True
    return False
