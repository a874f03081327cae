"""One engine per process and sessions as context managers.

The process entry point (a CLI command, a worker process) builds one :class:`Database` and hands it
to whoever needs it; nothing here is global. After ``fork`` a child calls :meth:`Database.dispose`
so it never shares a parent's connections.
"""

from __future__ import annotations

import contextlib
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from db.private import private_dir, private_file
from db.settings import DbSettings, GeneralSettings


def _sqlite_pragmas(busy_timeout_s: float) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Autocommit mode lets SQLAlchemy issue BEGIN itself (see the "begin" listener), which
        # pysqlite would otherwise defer until the first write, breaking SELECT-then-write logic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer a C-STORE with success (durability first).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    return on_connect


def _private_sqlite(path: Path) -> None:
    """The database's folder 0700 and its files 0600 (SQLite creates -wal and -shm like the file)."""
    private_dir(path.parent)
    for suffix in ("", "-wal", "-shm", "-journal"):
        private_file(path.with_name(path.name + suffix))


class Database:
    """The process's engine and session factory."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, busy_timeout_s: float = 30.0):
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                _private_sqlite(Path(parsed.database).expanduser())
            self.engine: Engine = create_engine(
                url, echo=echo, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})
        else:
            self.engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size,
                                        pool_pre_ping=True)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout_s))
            # BEGIN IMMEDIATE takes the write lock up front, so two writers wait for each other
            # (busy_timeout) instead of one failing mid-transaction with "database is locked".
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._busy_timeout_s = busy_timeout_s
        # SQLite has one writer; its busy handler makes a waiting writer sleep 1, 2, 5, 10 ms and
        # more between tries. Writers of this process queue here instead and start the moment the
        # previous one ends (several associations storing at once). Other processes still meet
        # SQLite's own lock. Re-entrant: a nested transaction meets SQLite's lock, as before.
        self._writers = threading.RLock() if self.is_sqlite else None
        self._own_connection: sqlite3.Connection | None = None  # driver_transaction's, made on first use
        self._own_psycopg: Any = None  # the same on PostgreSQL (a psycopg connection)
        self._own_psycopg_turn = threading.Lock()

    @classmethod
    def from_settings(cls, db_settings: DbSettings, general: GeneralSettings) -> Database:
        return cls(
            db_settings.effective_url(general),
            echo=db_settings.echo,
            pool_size=db_settings.pool_size,
            busy_timeout_s=db_settings.busy_timeout_s,
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends normally, rolled back on any exception."""
        with self._writer_turn(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A Core transaction (``engine.begin()``), in this process's writer queue on SQLite."""
        with self._writer_turn(), self.engine.begin() as conn:
            yield conn

    @property
    def has_driver_transaction(self) -> bool:
        """Whether :meth:`driver_transaction` serves this database (SQLite, and PostgreSQL through
        psycopg)."""
        return self.is_sqlite or self.engine.dialect.driver == "psycopg"

    @contextmanager
    def driver_transaction(self) -> Iterator[Any]:
        """A write transaction on the driver's own connection, for the few statements of every
        C-STORE (:mod:`db.repository.prepared` runs them): a ``sqlite3.Connection`` on SQLite, a
        ``psycopg.Connection`` on PostgreSQL.

        On PostgreSQL the process likewise keeps one psycopg connection for this use, taken by
        one thread at a time (a thread that finds it taken checks one out of the pool, pinged as
        every check-out is), and the transaction is psycopg's own (``BEGIN``, then ``COMMIT``, or
        ``ROLLBACK`` on any exception); SQLAlchemy's connection and transaction objects are left
        out. The pool's ping is a round trip to the server before every transaction; the held
        connection is instead checked without one (:func:`_psycopg_alive`: not closed or broken,
        idle, and nothing from the server waiting on its socket, which is where a server that
        ended the session leaves its last word or the end of the stream) and replaced when it
        fails that check. A connection psycopg found broken is closed, or invalidated rather
        than given back to the pool.

        :meth:`begin` costs a pool check-out and check-in, SQLAlchemy's transaction objects and
        its ``BEGIN IMMEDIATE`` through the event system: at several associations, more Python
        time per instance than the statements themselves. Here the process keeps one connection
        (made by the pool, so with the same pragmas) for this use alone, and the writer queue
        that every SQLite write of the process takes makes one thread at a time use it. The
        transaction is the same: ``BEGIN IMMEDIATE``, committed when the block ends, rolled
        back on any exception; a failed commit is rolled back too, so the connection is clean
        for the next caller.
        """
        if not self.is_sqlite:
            if not self.has_driver_transaction:
                raise RuntimeError("driver_transaction is for SQLite and psycopg; use begin()")
            yield from self._psycopg_transaction()
            return
        with self._writer_turn() as alone:
            if alone:
                connection = self._own_connection or self._connect_own()
                yield from _transaction(connection, self._busy_timeout_s)
                return
            # The queue timed out (a writer held it past the busy timeout): the held connection may
            # be in use, so this transaction takes one of its own and SQLite's lock decides.
            pooled = self.engine.raw_connection()
            try:
                yield from _transaction(pooled.driver_connection)  # type: ignore[arg-type]
            finally:
                pooled.close()

    def _psycopg_transaction(self) -> Iterator[Any]:
        if not self._own_psycopg_turn.acquire(blocking=False):
            yield from self._pooled_psycopg_transaction()
            return
        try:
            connection = self._held_psycopg()
            try:
                yield from _psycopg_block(connection)
            finally:
                if connection.broken or connection.closed:
                    self._own_psycopg = None
                    _close_quietly(connection)
        finally:
            self._own_psycopg_turn.release()

    def _held_psycopg(self) -> Any:
        """The process's psycopg connection for driver transactions, made anew when it is gone."""
        held = self._own_psycopg
        if held is not None and _psycopg_alive(held):
            return held
        self._own_psycopg = None
        if held is not None:
            _close_quietly(held)
        pooled = self.engine.raw_connection()
        connection = pooled.driver_connection
        pooled.detach()  # the pool forgets it: it is this process's until dispose() or close()
        self._own_psycopg = connection
        return connection

    def _pooled_psycopg_transaction(self) -> Iterator[Any]:
        pooled = self.engine.raw_connection()
        connection = pooled.driver_connection
        try:
            yield from _psycopg_block(connection)
        finally:
            if getattr(connection, "broken", False):
                pooled.invalidate()
            pooled.close()

    def _connect_own(self) -> sqlite3.Connection:
        pooled = self.engine.raw_connection()
        connection = pooled.driver_connection
        assert isinstance(connection, sqlite3.Connection)
        pooled.detach()  # the pool forgets it: it is this process's until dispose() or close()
        connection.execute("PRAGMA busy_timeout=0")  # BEGIN IMMEDIATE waits here (_begin_immediate)
        self._own_connection = connection
        return connection

    @contextmanager
    def _writer_turn(self) -> Iterator[bool]:
        """Yields whether this thread holds the writer queue (always False off SQLite)."""
        writers = self._writers
        if writers is None:
            yield False
            return
        # Past the busy timeout, go on: SQLite's own lock then decides, as without this queue.
        acquired = writers.acquire(timeout=self._busy_timeout_s)
        try:
            yield acquired
        finally:
            if acquired:
                writers.release()

    def dispose(self) -> None:
        """Drop pooled connections (after fork, or at shutdown). After a fork the held connection
        is the parent's: it is forgotten, not closed, as the pool's are."""
        self._own_connection = None
        self._own_psycopg = None
        self._own_psycopg_turn = threading.Lock()  # a thread of the parent may have held it
        self.engine.dispose(close=False)

    def close(self) -> None:
        own, self._own_connection = self._own_connection, None
        if own is not None:
            own.close()
        held, self._own_psycopg = self._own_psycopg, None
        if held is not None:
            _close_quietly(held)
        self.engine.dispose()


def _psycopg_block(connection: Any) -> Iterator[Any]:
    """psycopg's own transaction around the caller's block (a generator for ``yield from``)."""
    with connection.transaction():
        yield connection


def _close_quietly(connection: Any) -> None:
    """Close a psycopg connection that may already be dead (closing it then can raise)."""
    with contextlib.suppress(Exception):
        connection.close()


def _psycopg_alive(connection: Any) -> bool:
    """Whether a held psycopg connection can start a transaction, without a round trip: open,
    not broken, idle, and nothing waiting on its socket (an idle session is sent nothing unless
    the server is ending it: its termination message, or the end of the stream)."""
    if connection.closed or connection.broken or connection.info.transaction_status.name != "IDLE":
        return False
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _transaction(connection: sqlite3.Connection, busy_timeout_s: float | None = None) -> Iterator[sqlite3.Connection]:
    """The body of :meth:`Database.driver_transaction` on one connection (a generator for
    ``yield from``). With ``busy_timeout_s``, the connection has no busy timeout of its own and
    its ``BEGIN IMMEDIATE`` waits for another process's write here (:func:`_begin_immediate`)."""
    if busy_timeout_s is None:
        connection.execute("BEGIN IMMEDIATE")
    else:
        _begin_immediate(connection, busy_timeout_s)
    try:
        yield connection
        connection.commit()
    except BaseException:
        if connection.in_transaction:
            connection.rollback()
        raise


BUSY_RETRY_S = (0.0001, 0.0002, 0.0005, 0.001)
"""The waits between tries of a ``BEGIN IMMEDIATE`` that found another process writing; the last
repeats. SQLite's own busy handler waits 1, 2, 5, 10 ms and more between its tries, while the
writes of receiving processes hold the lock about a third of a millisecond: a waiter slept
through several of them, and several receivers left the machine idle."""


def _begin_immediate(connection: sqlite3.Connection, timeout_s: float) -> None:
    """``BEGIN IMMEDIATE``, tried again after short waits while the database is locked, for up to
    ``timeout_s`` (then SQLite's error is raised, as its busy timeout would)."""
    deadline = time.monotonic() + timeout_s
    tries = 0
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or time.monotonic() >= deadline:
                raise
        time.sleep(BUSY_RETRY_S[min(tries, len(BUSY_RETRY_S) - 1)])
        tries += 1
