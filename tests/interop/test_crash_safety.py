"""kill -9 in the middle of an association, then restart: every acknowledged instance is there."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from db.engine import Database
from db.queries import audit_events
from db.schema import Instance, Job, Study
from node.scu import RemoteNode, SendResult, scan, send
from tests.factories import ct_dataset
from tests.processes import NodeProcess

pytestmark = pytest.mark.interop


def test_kill_9_mid_association_loses_no_acknowledged_instance(node_process: NodeProcess, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "outgoing"
    folder.mkdir()
    for i in range(400):
        ct_dataset(study, series, index=i, size=128).save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
    files = scan([folder], SendResult())
    node_process.start()
    acknowledged: list[str] = []

    def progress(item, status) -> None:  # type: ignore[no-untyped-def]
        if status == 0:
            acknowledged.append(item.sop_instance_uid)

    sender = threading.Thread(target=send, args=(files, RemoteNode("TRIPHASE", "127.0.0.1", node_process.port)),
                              kwargs={"calling_ae": "TESTER", "timeout_s": 10, "progress": progress})
    sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    node_process.kill()  # SIGKILL, mid-association
    sender.join(timeout=60)
    assert 60 <= len(acknowledged) < 400

    spool = node_process.data_dir / "spool"
    # Simulate the two other crash windows: a write before its rename, and a file renamed in place
    # whose row never committed.
    (spool / ".tmp" / "deadbeef.part").write_bytes(b"half an instance")
    orphan = ct_dataset(study, series, index=999, size=16)
    orphan_path = spool / study / series / f"{orphan.SOPInstanceUID}.dcm"
    orphan.save_as(orphan_path, enforce_file_format=True)

    node_process.proc = None
    node_process.start()  # recovery runs before the node listens
    database = Database(f"sqlite:///{node_process.data_dir / 'triphase.db'}")
    try:
        with database.session() as s:
            rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
        for uid in acknowledged:
            row = rows[uid]
            data = (spool / row.path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.sha256
        assert orphan.SOPInstanceUID in rows
        assert len(audit_events(database, kind_prefix="instance.recovered")) >= 1
        assert [e.kind for e in audit_events(database, kind_prefix="association.interrupted")]
        assert list((spool / ".tmp").glob("*.part")) == []
        on_disk = {p.stem for p in spool.glob("*/*/*.dcm")}
        assert on_disk == set(rows), "every file in the spool is a recorded instance"
    finally:
        database.close()


def _jobs_and_states(database_path: Path) -> tuple[int, list[str]]:
    database = Database(f"sqlite:///{database_path}")
    try:
        with database.session() as s:
            return len(s.scalars(select(Job)).all()), list(s.scalars(select(Study.state)))
    finally:
        database.close()


def test_restart_after_downtime_does_not_complete_a_cut_off_study(node_process: NodeProcess,
                                                                   tmp_path: Path) -> None:
    node_process.extra_node = {"quiet_period_s": 2, "completion_poll_s": 0.2}
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "outgoing"
    folder.mkdir()
    for i in range(3):
        ct_dataset(study, series, index=i, size=16).save_as(folder / f"{i}.dcm", enforce_file_format=True)
    node_process.start()
    result = SendResult()
    send(scan([folder], result), RemoteNode("TRIPHASE", "127.0.0.1", node_process.port), calling_ae="TESTER",
         result=result)
    assert result.ok
    node_process.kill()  # the transfer is "cut off": the study is still receiving
    time.sleep(3)  # downtime longer than the quiet period
    database_path = node_process.data_dir / "triphase.db"
    for _ in range(3):  # restarts: none completes the study at once, none creates a job
        node_process.proc = None
        node_process.start()
        time.sleep(1.0)
        assert _jobs_and_states(database_path) == (0, ["receiving"])
        node_process.kill()
    node_process.proc = None
    node_process.start()
    deadline = time.monotonic() + 15
    while _jobs_and_states(database_path)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _jobs_and_states(database_path) == (1, ["complete"])  # one quiet period after the restart
