"""Bounded resources and a complete trail, with real sockets: deflate bombs, the instance size cap,
endless data sets, garbage commands, rejection floods, re-sends that move an instance, restarts."""

from __future__ import annotations

import struct
import time
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from sqlalchemy import func, select

from db.engine import Database
from db.queries import audit_events
from db.schema import Association as AssociationRow
from db.schema import Instance, Job, Study
from node.recovery import recover, renew_deadlines
from node.statuses import StoreStatus
from tests.association_wire import request_association
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory, RunningNode
from tests.node.test_scp import send_raw, store
from tests.processes import rss_bytes

MiB = 1024 * 1024


def _associate(port: int, syntax: str = ExplicitVRLittleEndian) -> Association:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, syntax)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title="TRIPHASE")


def _explicit(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _results(database: Database) -> list[str]:
    with database.session() as s:
        return [a.result for a in s.scalars(select(AssociationRow))]


def test_deflate_bomb_is_stored_as_received_without_inflating_it(start_node: NodeFactory,
                                                                  sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    ds.PixelData = bytes(200 * MiB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = deflater.compress(_explicit(ds)) + deflater.flush()
    del ds.PixelData
    assert len(bomb) < 1 * MiB
    assoc = _associate(running.port, DeflatedExplicitVRLittleEndian)
    assert assoc.is_established
    before = rss_bytes()
    try:
        status = send_raw(assoc, ds.SOPInstanceUID, bomb)
    finally:
        assoc.release()
    assert rss_bytes() - before < 64 * MiB
    assert status == StoreStatus.SUCCESS
    with sqlite_database.session() as s:
        row = s.scalars(select(Instance)).one()
    data = running.spool.absolute(row.path).read_bytes()
    assert data.endswith(bomb) and row.size_bytes == len(data)


def test_instance_over_the_cap_is_refused_and_the_node_stays_bounded(start_node: NodeFactory,
                                                                      sqlite_database: Database) -> None:
    running = start_node(sqlite_database, max_instance_mb=1)
    study, series = generate_uid(), generate_uid()
    small = ct_dataset(study, series, index=0, size=64)
    large = ct_dataset(study, series, index=1, size=860)  # 1.4 MiB of pixels: over the cap, under twice it
    assert store(running.port, [small, large, small]) == [0, StoreStatus.OUT_OF_RESOURCES_TOO_LARGE, 0]
    [event] = audit_events(sqlite_database, kind_prefix="instance.refused")
    assert "max_instance_mb" in event.message and event.sop_instance_uid == large.SOPInstanceUID
    assert running.spool.leftover_temp_files() == []
    assert len(running.spool.instance_files()) == 1


def test_endless_data_set_is_aborted_and_audited(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database, max_instance_mb=1)
    assoc = _associate(running.port)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    command = _store_command(generate_uid())
    fragment = b"\x00" * (64 * 1024)
    pdu = struct.pack(">BxL", 0x04, 6 + len(fragment)) + struct.pack(">LBB", 2 + len(fragment), 1, 0) + fragment
    raw.sendall(command)
    sent = 0
    try:
        while sent < 64 * MiB:  # far past twice the cap: the node must have cut us off
            raw.sendall(pdu)
            sent += len(fragment)
    except OSError:
        pass
    # Twice the cap (2 MiB) is read; what the kernel's socket buffers on both sides took in before
    # the reset reached us (autotuned, several MiB on loopback) comes on top of it.
    assert sent < 24 * MiB
    wait_until(lambda: _results(sqlite_database) == ["aborted"])
    assert running.node.door is not None
    running.node.door.gate.events.flush()
    [event] = audit_events(sqlite_database, kind_prefix="connection.refused")
    assert (event.detail or {}).get("instance_too_large") == 1


def _store_command(sop_uid: str) -> bytes:
    """A C-STORE-RQ command set in one P-DATA-TF (presentation context 1), data set to follow."""
    cmd = Dataset()
    cmd.AffectedSOPClassUID = CTImageStorage
    cmd.CommandField = 0x0001
    cmd.MessageID = 1
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000
    cmd.AffectedSOPInstanceUID = sop_uid
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, cmd)
    body = fp.getvalue()
    group = struct.pack("<HHLL", 0, 0, 4, len(body))
    pdv = group + body
    return struct.pack(">BxL", 0x04, 6 + len(pdv)) + struct.pack(">LBB", 2 + len(pdv), 1, 0x03) + pdv


def test_garbage_command_closes_the_association_row(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = _associate(running.port)
    assert assoc.is_established
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    garbage = b"\xde\xad\xbe\xef" * 8
    raw.sendall(struct.pack(">BxL", 0x04, 6 + len(garbage)) + struct.pack(">LBB", 2 + len(garbage), 1, 0x03)
                + garbage)
    wait_until(lambda: _results(sqlite_database) == ["aborted"])
    assoc.abort()


def test_unknown_calling_ae_flood_is_aggregated(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    for _ in range(20):
        assert request_association(running.port, "STRANGER").rejection == (0x01, 0x01, 0x03)
    rows = audit_events(sqlite_database, kind_prefix="association.rejected")
    assert len(rows) == 1 and "STRANGER" in rows[0].message  # the first at once
    running.node.rejections.flush()
    rows = audit_events(sqlite_database, kind_prefix="association.rejected")
    assert len(rows) == 2 and sum(int((r.detail or {}).get("count", 1)) for r in rows) == 20


def _job_count(database: Database) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count(Job.id))) or 0)


def test_resend_into_another_study_keeps_one_file_and_restarts_add_no_job(start_node: NodeFactory,
                                                                          sqlite_database: Database) -> None:
    running = start_node(sqlite_database, quiet_period_s=0.3)
    first = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    moved = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    moved.SOPInstanceUID = first.SOPInstanceUID
    assert store(running.port, [first]) == [0]
    wait_until(lambda: _job_count(sqlite_database) == 1)
    assert store(running.port, [moved]) == [0]
    wait_until(lambda: _job_count(sqlite_database) == 2)
    files = running.spool.instance_files()
    assert files == [f"{moved.StudyInstanceUID}/{moved.SeriesInstanceUID}/{moved.SOPInstanceUID}.dcm"]
    [event] = audit_events(sqlite_database, kind_prefix="instance.moved")
    assert (event.detail or {})["old_study_uid"] == first.StudyInstanceUID
    assert (event.detail or {})["new_study_uid"] == moved.StudyInstanceUID
    # The node died after the commit but before removing the old file: recovery removes it.
    old = running.spool.root / first.StudyInstanceUID / first.SeriesInstanceUID / f"{first.SOPInstanceUID}.dcm"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(running.spool.absolute(files[0]).read_bytes())
    for _ in range(3):
        recover(running.spool, running.repository, running.node.settings)
        time.sleep(0.5)
        running.node.monitor.run_once()
    assert _job_count(sqlite_database) == 2
    assert running.spool.instance_files() == files
    with sqlite_database.session() as s:
        assert s.scalars(select(Instance.path)).one() == files[0]


def test_restart_gives_receiving_studies_a_fresh_quiet_period(start_node: NodeFactory,
                                                              sqlite_database: Database) -> None:
    running: RunningNode = start_node(sqlite_database, quiet_period_s=2.0, hard_cap_s=2.0)
    ds = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    running.node.monitor.stop()
    assert store(running.port, [ds]) == [0]
    time.sleep(2.5)  # "downtime" past both the quiet period and the hard cap
    recover(running.spool, running.repository, running.node.settings)
    assert renew_deadlines(running.repository, running.node.settings) == 1
    assert running.node.monitor.run_once() == 0  # not completed at once after the restart
    assert audit_events(sqlite_database, kind_prefix="study.deadline_renewed")
    time.sleep(2.2)
    assert running.node.monitor.run_once() == 1
    with sqlite_database.session() as s:
        assert s.scalars(select(Study.state)).one() == "complete"



def test_refusals_the_database_could_not_take_are_counted_and_written_later(
    start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_node(sqlite_database)
    real_audit = running.repository.audit
    failing = True

    def audit(*args: object, **kwargs: object) -> None:
        if failing:
            raise OSError(28, "database or disk is full")
        real_audit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(running.repository, "audit", audit)
    bad = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    bad.SOPInstanceUID = "1.2.abc"
    assoc = _associate(running.port)
    try:
        statuses = [send_raw(assoc, "1.2.abc", _explicit(bad)) for _ in range(5)]
        failing = False
        statuses.append(send_raw(assoc, "1.2.abc", _explicit(bad)))
    finally:
        assoc.release()
    assert set(statuses) == {StoreStatus.INVALID_UID}
    rows = audit_events(sqlite_database, kind_prefix="instance.refused")
    assert len(rows) == 2
    assert sorted(int((r.detail or {}).get("count", 1)) for r in rows) == [1, 5]
