"""Writers of one process queue for SQLite's single write lock instead of sleeping in its busy
handler, and a nested transaction still meets SQLite's own lock (an error, not a hang)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from db.engine import Database
from db.migrate import upgrade
from db.repository import Repository
from db.repository.instances import InstanceRecord


def _record(study: str, series: str, n: int) -> InstanceRecord:
    uid = f"1.2.826.0.1.3680043.99.{n}"
    return InstanceRecord(study_uid=study, series_uid=series, sop_instance_uid=uid,
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
                          path=f"{study}/{series}/{uid}.dcm", size_bytes=1, sha256="0" * 64, modality="CT")


def _stack(thread: threading.Thread) -> list[str]:
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_a_second_writer_waits_in_the_queue_not_in_sqlite(tmp_path: Path) -> None:
    """While one transaction is open, another thread's does not reach SQLite (whose busy handler
    would sleep 1, 2, 5, 10 ms and more between tries); it starts once the first ends."""
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}", busy_timeout_s=30)
    upgrade(database)
    first_open, first_may_end, second_done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with database.session() as session:
            session.execute(text("SELECT 1"))
            first_open.set()
            first_may_end.wait(10)

    def second() -> None:
        with database.begin() as conn:
            conn.execute(text("SELECT 1"))
        second_done.set()

    one = threading.Thread(target=first)
    two = threading.Thread(target=second)
    one.start()
    assert first_open.wait(10)
    two.start()
    time.sleep(0.3)
    waiting = _stack(two)
    assert "_writer_turn" in waiting and "do_execute" not in waiting, waiting
    assert not second_done.is_set()
    first_may_end.set()
    one.join(10)
    two.join(10)
    assert second_done.is_set()
    database.close()


def test_concurrent_writers_all_commit(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}", busy_timeout_s=30)
    upgrade(database)
    repository = Repository(database)
    study, series = "1.2.826.0.1.3680043.99.1", "1.2.826.0.1.3680043.99.2"
    repository.record_instance(_record(study, series, 1000), quiet_period_s=30, hard_cap_s=3600)
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for n in range(first, first + 25):
                repository.record_instance(_record(study, series, n), quiet_period_s=30, hard_cap_s=3600)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    with database.session() as session:
        assert session.execute(text("SELECT count(*) FROM instances")).scalar() == 101
    database.close()


def test_a_nested_transaction_meets_sqlites_lock_not_a_hang(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}", busy_timeout_s=0.2)
    upgrade(database)
    started = time.monotonic()
    with database.session() as outer:
        outer.execute(text("SELECT 1"))
        with pytest.raises(OperationalError, match="locked"), database.session() as inner:
            inner.execute(text("SELECT 1"))
    assert time.monotonic() - started < 10
    database.close()


def test_postgresql_has_no_queue(postgres_url: str) -> None:
    database = Database(postgres_url)
    assert database._writers is None
    database.close()
