"""The C-STORE path's own SQLite transaction (:meth:`db.engine.Database.driver_transaction`):
committed or rolled back as a whole, clean for the next caller whatever happened, in the process's
writer queue, and never shared between two threads."""

from __future__ import annotations

import select
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from db.engine import Database
from db.migrate import upgrade


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}", busy_timeout_s=0.3)
    upgrade(database)
    with database.begin() as conn:
        conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES probe (id))"))
    yield database
    database.close()


def _ids(database: Database) -> list[int]:
    with database.begin() as conn:
        return list(conn.execute(text("SELECT id FROM probe ORDER BY id")).scalars())


def test_a_block_that_ends_normally_is_committed_on_the_held_connection(database: Database) -> None:
    with database.driver_transaction() as first:
        assert first.in_transaction
        first.execute("INSERT INTO probe (id) VALUES (1)")
    with database.driver_transaction() as second:
        second.execute("INSERT INTO probe (id) VALUES (2)")
    assert first is second and not second.in_transaction
    assert _ids(database) == [1, 2]
    assert second.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: the pool's pragmas
    assert second.execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_an_exception_rolls_the_whole_block_back(database: Database) -> None:
    with pytest.raises(RuntimeError), database.driver_transaction() as conn:
        conn.execute("INSERT INTO probe (id) VALUES (1)")
        raise RuntimeError("the handler failed")
    assert not conn.in_transaction
    assert _ids(database) == []


def test_a_commit_that_fails_is_rolled_back_and_the_connection_serves_again(database: Database) -> None:
    """A deferred foreign key fails at COMMIT, which leaves SQLite's transaction open: it must not
    stay open for the next caller (whose BEGIN would then fail)."""
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), database.driver_transaction() as conn:
        conn.execute("PRAGMA defer_foreign_keys = ON")
        conn.execute("INSERT INTO probe (id, parent) VALUES (1, 99)")
    assert not conn.in_transaction
    with database.driver_transaction() as again:
        again.execute("INSERT INTO probe (id) VALUES (3)")
    assert _ids(database) == [3]


def test_a_second_thread_waits_for_the_writer_queue(database: Database) -> None:
    entered = threading.Event()
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with database.driver_transaction() as conn:
            conn.execute("INSERT INTO probe (id) VALUES (1)")
            holding.set()
            release.wait(10)

    def second() -> None:
        with database.driver_transaction() as conn:
            entered.set()
            conn.execute("INSERT INTO probe (id) VALUES (2)")

    one = threading.Thread(target=hold)
    one.start()
    assert holding.wait(10)
    two = threading.Thread(target=second)
    two.start()
    time.sleep(0.1)
    assert not entered.is_set()
    release.set()
    one.join(10)
    two.join(10)
    assert entered.is_set() and _ids(database) == [1, 2]


def test_past_the_queues_timeout_sqlites_lock_decides_on_another_connection(database: Database) -> None:
    """A writer that held the queue past the busy timeout: the next transaction does not use the
    held connection (mid-transaction in another thread) but one of its own, and meets the lock."""
    holding, release = threading.Event(), threading.Event()
    held: list[sqlite3.Connection] = []

    def hold() -> None:
        with database.driver_transaction() as conn:
            held.append(conn)
            conn.execute("INSERT INTO probe (id) VALUES (1)")
            holding.set()
            release.wait(10)

    one = threading.Thread(target=hold)
    one.start()
    try:
        assert holding.wait(10)
        with pytest.raises(sqlite3.OperationalError, match="locked"), database.driver_transaction() as conn:
            assert conn is not held[0]
    finally:
        release.set()
        one.join(10)
    assert _ids(database) == [1]


def test_dispose_forgets_the_held_connection_and_close_closes_it(database: Database) -> None:
    with database.driver_transaction() as before:
        pass
    database.dispose()  # after a fork: the parent's connection is left alone
    before.execute("SELECT 1")
    with database.driver_transaction() as after:
        pass
    assert after is not before
    database.close()
    with pytest.raises(sqlite3.ProgrammingError):
        after.execute("SELECT 1")


def test_on_postgresql_it_is_psycopgs_own_transaction(postgres_url: str) -> None:
    """A pooled connection's psycopg connection in psycopg's transaction: committed when the block
    ends, rolled back on any exception, and back in the pool idle either way."""
    database = Database(postgres_url)
    try:
        assert database.has_driver_transaction
        with database.begin() as conn:
            conn.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
        with database.driver_transaction() as first:
            assert type(first).__module__.startswith("psycopg")
            first.execute("INSERT INTO probe (id) VALUES (1)")
        with pytest.raises(RuntimeError), database.driver_transaction() as second:
            second.execute("INSERT INTO probe (id) VALUES (2)")
            raise RuntimeError("the handler failed")
        with pytest.raises(psycopg.errors.UniqueViolation), database.driver_transaction() as third:
            third.execute("INSERT INTO probe (id) VALUES (1)")
        with database.begin() as conn:
            assert list(conn.execute(text("SELECT id FROM probe ORDER BY id")).scalars()) == [1]
        for connection in (first, second, third):
            assert connection.info.transaction_status.name == "IDLE"
    finally:
        database.close()


def test_a_connection_broken_mid_transaction_is_not_given_back_to_the_pool(postgres_url: str) -> None:
    database = Database(postgres_url, pool_size=1)
    try:
        with pytest.raises(psycopg.OperationalError), database.driver_transaction() as conn:
            pid = conn.info.backend_pid
            with database.begin() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            conn.execute("SELECT 1")
        assert conn.broken
        with database.driver_transaction() as fresh:
            assert fresh is not conn and fresh.execute("SELECT 1").fetchone() == (1,)
    finally:
        database.close()


def test_on_postgresql_the_process_holds_one_connection_checked_without_a_round_trip(postgres_url: str) -> None:
    """The held connection serves one transaction after another; a session the server ended
    while it sat idle is noticed before the next transaction, which gets a fresh connection and
    succeeds; a thread that finds it taken gets a pooled one."""
    database = Database(postgres_url)
    try:
        with database.driver_transaction() as first:
            pid = first.info.backend_pid
        with database.driver_transaction() as again:
            assert again is first and again.info.backend_pid == pid
        with database.begin() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        deadline = time.monotonic() + 5  # the server's last word reaches the socket
        while not select.select([first.fileno()], [], [], 0.05)[0] and time.monotonic() < deadline:
            pass
        with database.driver_transaction() as fresh:
            assert fresh is not first and fresh.execute("SELECT 1").fetchone() == (1,)
        assert first.closed
        inside, release = threading.Event(), threading.Event()

        def hold() -> None:
            with database.driver_transaction():
                inside.set()
                release.wait(5)

        holder = threading.Thread(target=hold)
        holder.start()
        assert inside.wait(5)
        try:
            with database.driver_transaction() as pooled:
                assert pooled is not fresh and pooled.execute("SELECT 1").fetchone() == (1,)
        finally:
            release.set()
            holder.join(5)
        database.dispose()
        assert not fresh.closed  # forgotten after a fork, not closed: the parent's socket
        with database.driver_transaction() as after:
            assert after is not fresh
        database.close()
        assert after.closed
    finally:
        database.close()


def _hold_the_write_lock(path: Path, seconds: float, locked: threading.Event) -> None:
    """Another process's writer, as SQLite sees it: a connection of its own holding the write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO probe (id) VALUES (100)")
        locked.set()
        time.sleep(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


@contextmanager
def _another_writer(database: Database, path: Path, seconds: float) -> Iterator[None]:
    """The held connection made (row 1), then another writer holding the lock for ``seconds``."""
    with database.driver_transaction() as conn:
        conn.execute("INSERT INTO probe (id) VALUES (1)")
    locked = threading.Event()
    holder = threading.Thread(target=_hold_the_write_lock, args=(path, seconds, locked))
    holder.start()
    assert locked.wait(5)
    try:
        yield
    finally:
        holder.join(5)


def test_begin_waits_for_another_writer_in_short_steps(database: Database, tmp_path: Path) -> None:
    """SQLite's own busy handler sleeps 1, 2, 5, 10 ms and more between tries; here the held
    connection tries again within a millisecond of the other writer's commit."""
    with _another_writer(database, tmp_path / "triphase.db", 0.1):
        started = time.monotonic()
        with database.driver_transaction() as conn:
            waited = time.monotonic() - started
            conn.execute("INSERT INTO probe (id) VALUES (2)")
    assert 0.05 <= waited < 0.3
    assert _ids(database) == [1, 2, 100]
    assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)  # the waiting is ours, in short steps


def test_begin_gives_up_after_the_busy_timeout(database: Database, tmp_path: Path) -> None:
    with _another_writer(database, tmp_path / "triphase.db", 1.0):
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"), database.driver_transaction():
            pass
        assert 0.25 <= time.monotonic() - started < 0.9  # the database's busy timeout: 0.3 s
    with database.driver_transaction() as conn:  # clean for the next caller
        conn.execute("INSERT INTO probe (id) VALUES (2)")
    assert _ids(database) == [1, 2, 100]
