"""The node's association threads wait for work instead of polling, and its early fsync keeps
every guarantee: a failed fsync is answered with a failure, never retried into a success."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from db.engine import Database
from node.statuses import StoreStatus
from node.wakeups import WakefulDIMSE, WakefulDUL, supported
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory
from tests.node.test_scp import scu, store


def test_this_pynetdicom_has_what_the_threads_build_on() -> None:
    """Otherwise the node falls back to polling (about 2 ms slower per instance): a pynetdicom
    upgrade that changed its internals must be noticed here, not in a benchmark."""
    assert supported()


def _where(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return "/".join(names)


def test_an_idle_association_waits_instead_of_polling(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    try:
        deadline = time.monotonic() + 5
        while not running.node.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        [served] = running.node.ae.active_associations
        assert isinstance(served.dul, WakefulDUL) and isinstance(served.dimse, WakefulDIMSE)
        seen: Counter[str] = Counter()
        for _ in range(40):
            time.sleep(0.005)
            dul, handler = _where(served.dul), _where(served)
            seen["dul waits on its socket"] += "_wait_for_input" in dul
            seen["handler thread waits for a message"] += "get_msg" in handler and "wait" in handler
        # pynetdicom's own threads would be found in time.sleep, polling
        assert seen["dul waits on its socket"] >= 36, seen
        assert seen["handler thread waits for a message"] >= 36, seen
        assert store(running.port, [ct_dataset(generate_uid(), generate_uid())]) == [0]
    finally:
        assoc.release()
    deadline = time.monotonic() + 5
    while running.node.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not running.node.ae.active_associations


def test_a_failed_fsync_is_refused_not_retried(start_node: NodeFactory, sqlite_database: Database,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The received file is fsynced early, on the receiving thread; the handler asks again. Linux
    reports a write-back error once: a second fsync would succeed over lost data."""
    running = start_node(sqlite_database)
    real_fsync = os.fsync
    failed: list[str] = []

    def fsync_failing_once(fd: int) -> None:
        path = Path(f"/proc/self/fd/{fd}").resolve()
        if path.name.endswith(".part") and not failed:
            failed.append(path.name)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_once)
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds]) == [StoreStatus.OUT_OF_RESOURCES_WRITE]
    assert failed
    assert running.spool.instance_files() == [] and running.spool.leftover_temp_files() == []
    assert store(running.port, [ds]) == [0]  # the next send is stored
