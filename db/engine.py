"""One engine per process and sessions as context managers.

The process entry point (a CLI command, a worker process) builds one :class:`Database` and hands it
to whoever needs it; nothing here is global. After ``fork`` a child calls :meth:`Database.dispose`
so it never shares a parent's connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

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

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        writers = self._writers
        if writers is None:
            yield
            return
        # Past the busy timeout, go on: SQLite's own lock then decides, as without this queue.
        acquired = writers.acquire(timeout=self._busy_timeout_s)
        try:
            yield
        finally:
            if acquired:
                writers.release()

    def dispose(self) -> None:
        """Drop pooled connections (after fork, or at shutdown)."""
        self.engine.dispose(close=False)

    def close(self) -> None:
        self.engine.dispose()
