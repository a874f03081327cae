"""The SCP in process, with a real pynetdicom SCU: echo, store, reject, duplicates, bad input."""

from __future__ import annotations

import errno
import hashlib
import os as os_module
import subprocess
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from sqlalchemy import select

from db.engine import Database
from db.queries import audit_events, list_studies
from db.schema import Association as AssociationRow
from db.schema import Instance
from node.settings import PeerSettings
from node.sop_classes import VERIFICATION
from node.spool import Spool
from node.statuses import StoreStatus
from tests.association_wire import request_association
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory


def scu(calling: str = "PACS") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def encode_body(ds: Dataset) -> bytes:
    """The data set as a C-STORE carries it (explicit VR little endian, no file meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def send_raw(assoc: Association, sop_uid: str, payload: bytes) -> int:
    """A C-STORE whose request and body we control byte for byte (pynetdicom would fix them).

    The requestor's reactor is paused, as pynetdicom does itself, so it does not eat the response.
    """
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = CTImageStorage
    req.AffectedSOPInstanceUID = sop_uid
    req.Priority = 2
    req.DataSet = BytesIO(payload)
    assert context.context_id is not None
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.send_msg(req, context.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None and rsp.Status is not None
    return int(rsp.Status)


def store(port: int, datasets: list[Dataset], calling: str = "PACS") -> list[int]:
    assoc = scu(calling).associate("127.0.0.1", port, ae_title="TRIPHASE")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def test_echo(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_store_writes_file_and_row_before_success(start_node: NodeFactory, database: Database) -> None:
    running = start_node(database)
    study, series = generate_uid(), generate_uid()
    datasets = [ct_dataset(study, series, index=i) for i in range(3)]
    assert store(running.port, datasets) == [0, 0, 0]
    with database.session() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
    for ds in datasets:
        row = rows[ds.SOPInstanceUID]
        path = running.spool.absolute(row.path)
        assert path == running.spool.root / study / series / f"{ds.SOPInstanceUID}.dcm"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256 and len(data) == row.size_bytes
        back = dcmread(path)
        assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData
        assert back.file_meta.TransferSyntaxUID == row.transfer_syntax_uid
    assert running.spool.leftover_temp_files() == []
    wait_until(lambda: _association_results(database) == ["released"])
    with database.session() as s:
        assoc = s.scalars(select(AssociationRow)).one()
    assert (assoc.calling_ae, assoc.instances_stored, assoc.peer_name) == ("PACS", 3, "pacs")


def test_every_released_association_is_recorded_released(start_node: NodeFactory, sqlite_database: Database) -> None:
    """A peer closes the connection the moment it has the release response; the node, which
    records an association whose connection closed as aborted, must not do so while it completes
    a release (Sta13): each of these was released."""
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    for index in range(12):
        assert store(running.port, [ct_dataset(study, series, index=index, size=16)]) == [0]
    wait_until(lambda: len(_association_results(sqlite_database)) == 12 and None not in _association_results(
        sqlite_database))
    assert _association_results(sqlite_database) == ["released"] * 12


def test_unknown_calling_ae_is_rejected_and_audited(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assert request_association(running.port, "STRANGER").rejection == (0x01, 0x01, 0x03)
    [event] = audit_events(sqlite_database, kind_prefix="association.rejected")
    assert "STRANGER" in event.message and event.severity == "warning"


def test_peer_bound_to_a_host_is_rejected_from_elsewhere(start_node: NodeFactory,
                                                          sqlite_database: Database) -> None:
    running = start_node(sqlite_database, peers=(PeerSettings(name="pacs", ae_title="PACS", host="10.9.9.9"),))
    assert request_association(running.port, "PACS").rejection == (0x01, 0x01, 0x03)


def test_wrong_called_ae_is_rejected(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assert request_association(running.port, "PACS", called="NOTUS").rejection == (0x01, 0x01, 0x07)


def test_promiscuous_mode_accepts_anyone(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database, promiscuous=True)
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds], calling="ANYONE") == [0]


def test_resent_instance_replaces_and_keeps_one_row(start_node: NodeFactory, database: Database) -> None:
    running = start_node(database)
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds]) == [0]
    ds.PixelData = bytes(len(ds.PixelData))
    assert store(running.port, [ds]) == [0]
    with database.session() as s:
        [row] = s.scalars(select(Instance)).all()
    assert row.times_received == 2
    assert dcmread(running.spool.absolute(row.path)).PixelData == ds.PixelData
    assert len(audit_events(database, kind_prefix="instance.replaced")) == 1


@pytest.mark.parametrize("field, value, status", [
    ("StudyInstanceUID", "1.2.3/../../../etc", StoreStatus.INVALID_UID),
    ("StudyInstanceUID", "..", StoreStatus.INVALID_UID),
    ("SeriesInstanceUID", "1." + "2" * 70, StoreStatus.INVALID_UID),
    ("SeriesInstanceUID", "1.2.abc", StoreStatus.INVALID_UID),
    ("StudyInstanceUID", None, StoreStatus.MISSING_IDENTIFIER),
])
def test_unsafe_uids_are_refused(start_node: NodeFactory, sqlite_database: Database, field: str,
                                 value: str | None, status: StoreStatus) -> None:
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid())
    if value is None:
        delattr(ds, field)
    else:
        setattr(ds, field, value)
    assert store(running.port, [ds]) == [status]
    assert running.spool.instance_files() == [] and running.spool.leftover_temp_files() == []
    assert not any(p.name == "etc" for p in running.spool.root.parent.rglob("*"))
    [event] = audit_events(sqlite_database, kind_prefix="instance.refused")
    assert event.detail == {"status": f"0x{status:04X}"}


def test_instance_uid_mismatch_is_refused(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid())
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    status = send_raw(assoc, generate_uid(), encode_body(ds))  # the request names another instance
    assoc.release()
    assert status == StoreStatus.DATASET_DOES_NOT_MATCH
    assert running.spool.instance_files() == []


def test_low_disk_watermark_refuses_with_out_of_resources(start_node: NodeFactory,
                                                         sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    running.spool.min_free_bytes = running.spool.free_bytes() + 10**12
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds]) == [StoreStatus.OUT_OF_RESOURCES_DISK]
    assert running.spool.instance_files() == [] and running.spool.leftover_temp_files() == []
    [event] = audit_events(sqlite_database, kind_prefix="instance.refused")
    assert event.severity == "error" and "free disk space" in event.message
    running.spool.min_free_bytes = 0
    assert store(running.port, [ds]) == [0]  # the node stayed up and recovers when space is back


def test_write_failure_is_refused_and_leaves_nothing(start_node: NodeFactory, sqlite_database: Database,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_node(sqlite_database)
    real_fsync = os_module.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("node.spool.os.fsync", failing_fsync)
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds]) == [StoreStatus.OUT_OF_RESOURCES_WRITE]
    monkeypatch.setattr("node.spool.os.fsync", real_fsync)
    assert running.spool.instance_files() == [] and running.spool.leftover_temp_files() == []


def test_database_failure_refuses_and_removes_the_file(start_node: NodeFactory, sqlite_database: Database,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_node(sqlite_database)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(running.repository, "record_instance", broken)
    ds = ct_dataset(generate_uid(), generate_uid())
    assert store(running.port, [ds]) == [StoreStatus.OUT_OF_RESOURCES_DATABASE]
    assert running.spool.instance_files() == []


def test_truncated_and_garbage_bodies_are_refused(start_node: NodeFactory,
                                                  sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid())
    whole = encode_body(ds)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    statuses = [send_raw(assoc, ds.SOPInstanceUID, payload)
                for payload in (whole[: len(whole) - 100], b"\xff" * 64 + whole[:10], b"\x08\x00")]
    assert assoc.send_c_echo().Status == 0  # the association survived
    assoc.release()
    assert all(s == StoreStatus.CANNOT_UNDERSTAND for s in statuses), [hex(s) for s in statuses]
    assert running.spool.instance_files() == []
    assert len(audit_events(sqlite_database, kind_prefix="instance.refused")) == 3


def test_study_completion_creates_a_ready_job(start_node: NodeFactory, database: Database) -> None:
    running = start_node(database, quiet_period_s=0.5)
    study = generate_uid()
    assert store(running.port, [ct_dataset(study, generate_uid(), index=i) for i in range(2)]) == [0, 0]
    wait_until(lambda: bool(running.dispatcher.completed), timeout=10)
    [done] = running.dispatcher.completed
    assert done.study_uid == study and done.completed_by == "quiet"
    [summary] = list_studies(database)
    assert (summary.state, summary.latest_job_state, summary.instances) == ("complete", "ready", 2)
    # A late instance opens revision 2, which completes in turn.
    assert store(running.port, [ct_dataset(study, generate_uid())]) == [0]
    wait_until(lambda: len(running.dispatcher.completed) == 2, timeout=10)
    assert running.dispatcher.completed[1].revision == 2


def test_per_peer_quiet_period(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database, quiet_period_s=600,
                         peers=(PeerSettings(name="fast", ae_title="PACS", quiet_period_s=0.3),))
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid())]) == [0]
    wait_until(lambda: bool(running.dispatcher.completed), timeout=10)


def test_graceful_shutdown_finishes_open_association(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    study, series = generate_uid(), generate_uid()
    stopper = threading.Thread(target=running.node.shutdown, kwargs={"grace_s": 5})
    stopper.start()
    time.sleep(0.3)
    # No new associations once shutdown began...
    assert not scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE").is_established
    # ...but the open one may finish its work.
    assert [int(assoc.send_c_store(ct_dataset(study, series, index=i)).Status) for i in range(3)] == [0, 0, 0]
    assoc.release()
    stopper.join(timeout=10)
    assert not stopper.is_alive()
    assert len(running.spool.instance_files()) == 3


def test_stores_after_grace_are_refused_not_dropped(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    running.node.store_handler.draining.set()
    status = assoc.send_c_store(ct_dataset(generate_uid(), generate_uid())).Status
    assoc.release()
    assert status == StoreStatus.OUT_OF_RESOURCES_SHUTDOWN
    assert running.spool.instance_files() == []


def test_several_associations_at_once(start_node: NodeFactory, database: Database, tmp_path: Path) -> None:
    running = start_node(database)
    study = generate_uid()
    results: list[list[int]] = []

    def sender() -> None:
        series = generate_uid()
        results.append(store(running.port, [ct_dataset(study, series, index=i) for i in range(5)]))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [[0] * 5] * 4
    [summary] = list_studies(database)
    assert (summary.series, summary.instances) == (4, 20)


def _association_results(database: Database) -> list[str]:
    with database.session() as s:
        return [a.result for a in s.scalars(select(AssociationRow))]


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real ENOSPC. Mounting needs privileges; without them the test is skipped."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, timeout=10)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (the watermark test covers a full disk)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=10)


def test_really_full_disk_refuses_without_leaving_partial_files(
    start_node: NodeFactory, sqlite_database: Database, tiny_filesystem: Path
) -> None:
    running = start_node(sqlite_database)
    running.spool = Spool(tiny_filesystem / "spool")
    running.node.store_handler.spool = running.spool
    study, series = generate_uid(), generate_uid()
    statuses = store(running.port, [ct_dataset(study, series, index=i, size=256) for i in range(12)])
    assert statuses[0] == 0
    # 12 x 128 KiB cannot fit in 1 MiB: refused before writing (free space known too small) or by
    # the file system itself (ENOSPC), never half-stored.
    refused = set(statuses) - {0}
    assert refused and refused <= {StoreStatus.OUT_OF_RESOURCES_DISK, StoreStatus.OUT_OF_RESOURCES_WRITE}
    stored = statuses.count(0)
    assert len(running.spool.instance_files()) == stored
    assert running.spool.leftover_temp_files() == []
    with sqlite_database.session() as s:
        assert len(s.scalars(select(Instance)).all()) == stored


def test_unexpected_error_answers_processing_failure(start_node: NodeFactory, sqlite_database: Database,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_node(sqlite_database)

    def bug(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("node.receiver.read_received_header", bug)
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid())]) == [StoreStatus.PROCESSING_FAILURE]
    [event] = audit_events(sqlite_database, kind_prefix="instance.refused")
    assert event.severity == "error" and "KeyError" in event.message
