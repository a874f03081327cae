"""The node's association threads wait for work instead of polling, and its early fsync keeps
every guarantee: a failed fsync is answered with a failure, never retried into a success."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import socket
import sys
import threading
import time
from collections import Counter
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from sqlalchemy import select

from db.engine import Database
from db.schema import Instance
from node import wakeups
from node.receiver import StoreHandler
from node.statuses import StoreStatus
from node.wakeups import WakefulDIMSE, WakefulDUL, supported
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory, RunningNode
from tests.node.test_limits import _associate, _results, _store_command
from tests.node.test_pdata import pdu, pdv
from tests.node.test_scp import encode_body, scu, store


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


def _open(running: RunningNode) -> tuple[Association, Association]:
    """An association from a test SCU, and the node's side of it once the node serves it."""
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    deadline = time.monotonic() + 5
    while not running.node.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    [served] = running.node.ae.active_associations
    return assoc, served


def test_an_idle_association_waits_instead_of_polling(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc, served = _open(running)
    try:
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


def test_the_receiving_thread_fsyncs_the_file_and_never_reads_it_back(
        start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash is of the bytes as they were written, and the fsync starts on the DUL thread that
    wrote them, with no hand-off to another thread; the row's hash is the stored file's."""
    running = start_node(sqlite_database)
    real_fsync, real_pread = os.fsync, os.pread
    fsynced_by: list[str] = []
    read_back: list[str] = []

    def spy_fsync(fd: int) -> None:
        if Path(f"/proc/self/fd/{fd}").resolve().name.endswith(".part"):
            fsynced_by.append(type(threading.current_thread()).__name__)
        real_fsync(fd)

    def spy_pread(fd: int, count: int, offset: int) -> bytes:
        if Path(f"/proc/self/fd/{fd}").resolve().name.endswith(".part"):
            read_back.append(threading.current_thread().name)
        return real_pread(fd, count, offset)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "pread", spy_pread)
    datasets = [ct_dataset(generate_uid(), generate_uid(), size=64) for _ in range(3)]
    assert store(running.port, datasets) == [0, 0, 0]
    assert fsynced_by == ["WakefulDUL"] * 3 and read_back == []
    with sqlite_database.session() as session:
        rows = session.scalars(select(Instance)).all()
    assert len(rows) == 3
    for row in rows:
        data = (running.spool.root / row.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256


class _Senders:
    """Which thread sent each C-STORE response, and by which way (send_now or the DUL's queue)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now: list[tuple[str, bool]] = []
        self.queued: list[str] = []
        send_now, send = WakefulDUL.send_now, WakefulDUL._send

        def spy_now(dul: WakefulDUL, primitive: P_DATA) -> bool:
            sent = send_now(dul, primitive)
            self.now.append((threading.current_thread().name, sent))
            return sent

        def spy_send(dul: WakefulDUL, pdu: object) -> None:
            if isinstance(pdu, P_DATA_TF):
                self.queued.append(threading.current_thread().name)
            send(dul, pdu)

        monkeypatch.setattr(WakefulDUL, "send_now", spy_now)
        monkeypatch.setattr(WakefulDUL, "_send", spy_send)


def test_a_store_is_served_and_answered_on_the_thread_that_received_it(
        start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """No hand-off to the association thread and back: the DUL thread that decoded the request
    runs the handler and sends the answer on a plain socket; the association thread serves none."""
    senders = _Senders(monkeypatch)
    handled_by: list[type] = []
    served_by_reactor: list[str] = []
    call, serve = StoreHandler.__call__, Association._serve_request

    def spy_call(handler: StoreHandler, event: object) -> int:
        handled_by.append(type(threading.current_thread()))
        return call(handler, event)  # type: ignore[arg-type]

    def spy_serve(assoc: Association, msg: object, context_id: int) -> None:
        if isinstance(threading.current_thread(), Association):
            served_by_reactor.append(type(msg).__name__)
        serve(assoc, msg, context_id)  # type: ignore[arg-type]

    monkeypatch.setattr(StoreHandler, "__call__", spy_call)
    monkeypatch.setattr(Association, "_serve_request", spy_serve)
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    assert store(running.port, [ct_dataset(study, series, index=i) for i in range(3)]) == [0, 0, 0]
    assert handled_by == [WakefulDUL] * 3
    assert [sent for _, sent in senders.now] == [True, True, True] and senders.queued == []
    assert served_by_reactor == []
    echo = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert echo.is_established and echo.send_c_echo().Status == 0
    echo.release()
    assert served_by_reactor == ["C_ECHO"]  # any other request: the association thread, as before


def test_a_request_on_a_context_never_accepted_aborts_only_its_association(
        start_node: NodeFactory, sqlite_database: Database) -> None:
    """A request sent on a presentation context the node never accepted ends its association (it
    is never served on the receiving thread, where pynetdicom's abort for it would wait for that
    thread itself), and the node goes on serving."""
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid(), size=16)
    command = _store_command(ds.SOPInstanceUID)[12:]
    assoc = _associate(running.port)
    assert assoc.is_established
    sock = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert sock is not None
    sock.sendall(pdu(0x04, pdv(99, 0x03, command) + pdv(99, 0x02, encode_body(ds))))
    wait_until(lambda: not running.node.ae.active_associations, timeout=10)
    assert _results(sqlite_database) == ["aborted"]
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid(), size=16)]) == [0]


def test_an_abort_on_the_receiving_thread_does_not_wait_for_itself(
        start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the handler (here in the status check) makes pynetdicom abort the
    association, blocking until its DUL thread has ended; on that thread itself the waiting is
    done aside, so the association ends instead of hanging its thread forever."""
    validate = StorageServiceClass.validate_status
    failures = [RuntimeError("status check failed")]

    def failing_once(service: StorageServiceClass, status: object, rsp: object) -> object:
        if failures:
            raise failures.pop()
        return validate(service, status, rsp)  # type: ignore[arg-type]

    monkeypatch.setattr(StorageServiceClass, "validate_status", failing_once)
    running = start_node(sqlite_database)
    ae = scu()
    ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    assoc.send_c_store(ct_dataset(generate_uid(), generate_uid(), size=16))
    wait_until(lambda: not running.node.ae.active_associations, timeout=10)
    wait_until(lambda: not [thread for thread in threading.enumerate() if isinstance(thread, WakefulDUL)], timeout=10)
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid(), size=16)]) == [0]


def test_with_a_pdu_listener_the_response_goes_through_the_dul(start_node: NodeFactory,
                                                               sqlite_database: Database,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever listens for sent PDUs (pynetdicom's own dumps at DEBUG, say) must see the response:
    it then takes the DUL thread's queue, as pynetdicom sends it."""
    senders = _Senders(monkeypatch)
    running = start_node(sqlite_database)
    assert running.node.door is not None
    heard: list[str] = []
    for server in running.node.door._servers:
        server.bind(evt.EVT_PDU_SENT, lambda event: heard.append(type(event.pdu).__name__))
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid())]) == [0]
    assert [sent for _, sent in senders.now] == [False]
    assert len(senders.queued) == 1 and "P_DATA_TF" in heard


def test_the_reactor_pass_after_a_message_skips_its_pause(start_node: NodeFactory, sqlite_database: Database,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's association reactor pauses 1 ms at the top of every pass; the pass right after
    a served message goes straight to waiting for the next (one skip per message), every other pass
    still pauses, so a pass that finds nothing never loops without one."""
    calls: Counter[str] = Counter()
    pause, real_sleep = wakeups._REACTOR_CLOCK.sleep, wakeups.time.sleep

    def counted_pause(seconds: float) -> None:
        if isinstance(threading.current_thread(), Association) and seconds == wakeups.REACTOR_PAUSE_S:
            calls["asked"] += 1
        pause(seconds)

    def counted_sleep(seconds: float) -> None:
        if isinstance(threading.current_thread(), Association) and seconds == wakeups.REACTOR_PAUSE_S:
            calls["slept"] += 1
        real_sleep(seconds)

    monkeypatch.setattr(wakeups._REACTOR_CLOCK, "sleep", counted_pause)
    monkeypatch.setattr(wakeups, "time", SimpleNamespace(sleep=counted_sleep))
    monkeypatch.setattr(WakefulDIMSE, "_serve_here", lambda dimse, item: False)  # all to the association thread
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    assert store(running.port, [ct_dataset(study, series, index=i, size=64) for i in range(5)]) == [0] * 5
    assert calls["asked"] - calls["slept"] == 5, calls
    assert calls["slept"] >= 1, calls  # the passes that found nothing still paused


def test_a_dul_with_an_open_connection_does_not_pause_between_passes(
        start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's DUL loop pauses for its run-loop delay (zero here) after a pass with no
    event; a wakeful DUL waits in select() instead, so with its connection open it skips the
    pause (a system call and a turn of the GIL each); without a connection the pause stays."""
    asked: Counter[bool] = Counter()
    slept_while_open: list[float] = []
    real_sleep = time.sleep

    def counted_pause(seconds: float) -> None:
        thread = threading.current_thread()
        if isinstance(thread, WakefulDUL) and seconds == 0:
            asked[thread.waits_for_input()] += 1
        wakeups._dul_pause(seconds)

    def counted_sleep(seconds: float) -> None:
        thread = threading.current_thread()
        if isinstance(thread, WakefulDUL) and thread.waits_for_input():
            slept_while_open.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(wakeups._DUL_CLOCK, "sleep", counted_pause)
    monkeypatch.setattr(time, "sleep", counted_sleep)
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    assert store(running.port, [ct_dataset(study, series, index=i, size=64) for i in range(5)]) == [0] * 5
    assert asked[True] >= 5, asked
    assert slept_while_open == []


def test_a_dul_waiting_for_the_peer_to_close_still_pauses(start_node: NodeFactory, sqlite_database: Database) -> None:
    """In Sta13 (release answered, waiting for the peer to close) pynetdicom's own check runs
    without waiting, and in Sta1 the closed socket gives select() nothing to wait on: there the
    pause must stay, or the loop would spin holding the GIL and starve the association thread."""
    running = start_node(sqlite_database)
    assoc, served = _open(running)
    try:
        dul = served.dul
        assert isinstance(dul, WakefulDUL) and dul.waits_for_input()
        machine = dul.state_machine
        state = machine.current_state
        machine.current_state = "Sta13"
        try:
            assert not dul.waits_for_input()
        finally:
            machine.current_state = state
    finally:
        assoc.release()
    wait_until(lambda: not running.node.ae.active_associations)
    assert dul.state_machine.current_state == "Sta1"
    assert not dul.waits_for_input()
    closed = socket.socket()
    closed.close()
    dul.socket.socket = closed  # type: ignore[union-attr]  # as a release (AR-5) leaves it: shut, still there
    assert not dul.waits_for_input()


def test_closing_the_socket_waits_for_a_send_and_nothing_is_sent_after(start_node: NodeFactory,
                                                                       sqlite_database: Database) -> None:
    """The handler thread may be sending a response while the DUL thread closes the connection:
    closing waits for the send, so no byte can go to a descriptor the system has given to another
    connection, and a send after the close sends nothing (the caller queues it, to no effect)."""
    running = start_node(sqlite_database)
    assoc, served = _open(running)
    try:
        dul = served.dul
        assert isinstance(dul, WakefulDUL)
        door_socket = dul.socket
        with door_socket.send_lock:  # type: ignore[union-attr]  # as send_now holds it
            closing = threading.Thread(target=door_socket.close)  # type: ignore[union-attr]
            closing.start()
            time.sleep(0.2)
            assert closing.is_alive() and door_socket.socket is not None  # type: ignore[union-attr]
        closing.join(5)
        assert not closing.is_alive() and door_socket.socket is None  # type: ignore[union-attr]
        assert dul.send_now(P_DATA()) is False
    finally:
        assoc.abort()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_peers_aborting_while_the_node_answers_leave_it_serving(start_node: NodeFactory, sqlite_database: Database,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A peer aborts just after its data set is out, while the handler thread writes and answers:
    no thread dies, the node logs no error of its own (pynetdicom logs each abort), keeps every
    recorded instance's file, leaves no partial file, ends every association and still serves."""
    running = start_node(sqlite_database, max_associations=32, max_per_address=32)
    study, series = generate_uid(), generate_uid()
    rng = random.Random(14)

    def abort_while_answered(index: int) -> None:
        assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
        assert assoc.is_established
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        assert context.context_id is not None
        request = C_STORE()
        request.MessageID, request.Priority = index + 1, 2
        request.AffectedSOPClassUID = CTImageStorage
        ds = ct_dataset(study, series, index=index, size=128)
        request.AffectedSOPInstanceUID = ds.SOPInstanceUID
        request.DataSet = BytesIO(encode_body(ds))
        assoc._reactor_checkpoint.clear()  # its reactor must not take the response
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.send_msg(request, context.context_id)
        while not assoc.dul.to_provider_queue.empty():  # every fragment is on the wire
            time.sleep(0.0002)
        time.sleep(rng.uniform(0, 0.03))  # before, while or after the node answers
        assoc.abort()

    caplog.set_level(logging.ERROR)
    for round_number in range(3):
        threads = [threading.Thread(target=abort_while_answered, args=(round_number * 10 + i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    deadline = time.monotonic() + 10
    while running.node.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running.node.ae.active_associations
    assert store(running.port, [ct_dataset(study, series, index=99)]) == [0]
    ours = [record for record in caplog.records if record.name.split(".")[0] in {"node", "db"}]
    assert [record.getMessage() for record in ours if record.levelno >= logging.ERROR] == []
    with sqlite_database.session() as session:
        recorded = set(session.scalars(select(Instance.path)))
    assert recorded == set(running.spool.instance_files())
    assert running.spool.leftover_temp_files() == []
