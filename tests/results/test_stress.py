"""A short stress run of the whole chain on the embedded SQLite: six studies, a worker with four pool
processes sweeping the outbox ten times a second, and a busy pool child killed mid-run.

Every job must end ``sent``, moved there exactly once; the PACS holds one SR per study; no job has
two predictions for a lesion; nothing failed, nothing is stuck, and the worker's log shows neither
a locked database nor a refused state change. ``bench/stress.py`` is the longer version.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.queries import audit_events
from db.schema import Job, Prediction
from node.scu import RemoteNode, SendResult, scan, send
from tests.processes import child_pids, cpu_ticks
from tests.results.conftest import pipeline
from tests.stalls import StallWatch

pytestmark = pytest.mark.interop

STUDIES = 6
DONE = ("sent", "failed", "skipped", "shadowed")


def pool_children(worker: int) -> list[int]:
    """The worker's prefork pool processes (not its spawned sweeper, which runs multiprocessing's stub)."""
    return child_pids(worker, excluding=b"multiprocessing")


def kill_busiest(pids: list[int]) -> int:
    """SIGKILL the pool process that used the most CPU over a short look: the one analysing."""
    before = {pid: cpu_ticks(pid) for pid in pids}
    time.sleep(0.5)
    busiest = max(pids, key=lambda pid: cpu_ticks(pid) - before[pid])
    subprocess.run(["kill", "-9", str(busiest)], check=False)
    return busiest


def job_states(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.scalars(select(Job.state)))


def wait_for(check: Callable[[], bool], timeout: float, what: Callable[[], str], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what()}\n{log.read_text(errors='replace')[-6000:]}")
        time.sleep(0.2)


def srs_per_study(pacs: Path) -> Counter[str]:
    studies: Counter[str] = Counter()
    for path in pacs.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "SR":
            studies[ds.StudyInstanceUID] += 1
    return studies


@pytest.mark.timeout(300)
def test_a_loaded_pool_with_a_killed_child_sends_every_study_once(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("ct-histology")
    with pipeline(tmp_path, artifact, completion_poll_s=0.1) as rig:  # whole studies complete by their roles
        node, log = rig.node.start(), rig.worker_log
        worker = rig.start_worker(concurrency=4, sweep_s=0.1)
        database = rig.database
        assert node.proc is not None
        for folder in sorted(studies.glob("study-*"))[:STUDIES]:  # one after the other, as a PACS pushes
            result = SendResult()
            with StallWatch({"node": node.proc.pid, "sender (this test)": os.getpid()}) as watch:
                send(scan([folder], result), RemoteNode("TRIPHASE", "127.0.0.1", node.port), calling_ae="SENDER",
                     result=result, progress=watch.moved)
            assert result.ok, f"{result.failed[:3]}\n{watch.dumps}"
        wait_for(lambda: "running" in job_states(database), 90, lambda: "a job to be analysed", log)
        wait_for(lambda: len(pool_children(worker.pid)) == 4, 30, lambda: "four pool processes", log)
        kill_busiest(pool_children(worker.pid))
        wait_for(lambda: len(job_states(database)) == STUDIES and all(s in DONE for s in job_states(database)),
                 180, lambda: f"every job to finish: {job_states(database)}", log)
        assert job_states(database) == ["sent"] * STUDIES, log.read_text()[-4000:]
        kinds = Counter((e.job_id, e.kind) for e in audit_events(database, kind_prefix="job."))
        with database.session() as session:
            jobs = list(session.scalars(select(Job.id)))
            lesions = session.execute(select(Prediction.job_id, func.count(), func.count(func.distinct(
                Prediction.lesion_id))).group_by(Prediction.job_id)).all()
        assert all(kinds[(job, "job.sent")] == 1 and kinds[(job, "job.analysed")] == 1 for job in jobs), kinds
        assert not [key for key in kinds if key[1] == "job.failed"]
        assert len(lesions) == STUDIES and all(rows == distinct >= 1 for _, rows, distinct in lesions)
        assert sorted(srs_per_study(tmp_path / "pacs").values()) == [1] * STUDIES
        text = log.read_text(errors="replace")
        assert "database is locked" not in text and "IllegalTransition" not in text, text[-4000:]
