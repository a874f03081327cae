"""End to end on real servers: Orthanc pushes a study, the node completes it, a Celery worker
(real Redis) analyses it, and the SR and SC appear in Orthanc in the same study; also for the study
as multi-frame (Legacy Converted Enhanced) instances."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
import redis
from pydicom.dataset import Dataset

from db.engine import Database
from db.queries import audit_events, list_studies
from tests.conftest import free_port, require_tool
from tests.results.conftest import pipeline_node, start_worker, stop_worker, wait_for_job_state
from worker.grouping import load_rules
from worker.grouping.matching import group_study
from worker.grouping.series_info import scan_studies
from worker.synth.multiframe import convert_study

pytestmark = pytest.mark.interop


@pytest.fixture
def redis_db() -> int:
    """A Redis database of its own for this test, emptied before and after."""
    number = random.randint(1, 15)
    client = redis.Redis(host="127.0.0.1", port=6379, db=number, socket_timeout=5)
    try:
        client.flushdb()
    except redis.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (tests/run.sh starts it)")
    yield number
    client.flushdb()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_study_from_orthanc_comes_back_analysed(trained, orthanc_factory, redis_db: int, tmp_path: Path,
                                               request: pytest.FixtureRequest, backend: str) -> None:
    studies, artifact, _ = trained("ct-histology")
    node_port = free_port()
    orthanc = orthanc_factory(modalities={"node": ["TRIPHASE", "127.0.0.1", node_port]})
    node = pipeline_node(tmp_path / "node", broker_url=f"redis://127.0.0.1:6379/{redis_db}", artifact=artifact,
                         task="ct-histology", destination=(orthanc.aet, orthanc.dicom_port), sender=orthanc.aet)
    node.port = node_port
    if backend == "postgresql":
        node.db_url = request.getfixturevalue("postgres_url")
    node.start()
    worker = start_worker(node, tmp_path / "worker.log")
    try:
        study_dir = sorted(studies.glob("study-*"))[0]
        orthanc_study = orthanc.upload(sorted(study_dir.glob("*.dcm")))
        before = len(orthanc.get(f"/studies/{orthanc_study}/instances"))
        orthanc.post("/modalities/node/store", orthanc_study)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if len(orthanc.get(f"/studies/{orthanc_study}/instances")) >= before + 2:
                break
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        after = orthanc.get(f"/studies/{orthanc_study}/instances")
        assert len(after) == before + 2, (tmp_path / "worker.log").read_text()[-3000:] + node.log()[-2000:]
        modalities = sorted(orthanc.get(f"/instances/{i['ID']}/simplified-tags").get("Modality") for i in after)
        assert "SR" in modalities
        [row] = json.loads(node.cli("studies", "--json").stdout)
        assert (row["latest_job_state"], row["completed_by"]) == ("sent", "roles")  # whole: no quiet period
        database = Database(node.db_url or f"sqlite:///{node.data_dir / 'triphase.db'}")
        try:
            kinds = [e.kind for e in audit_events(database)]
        finally:
            database.close()
        for kind in ("study.complete", "job.queued", "job.running", "job.analysed", "send.sent", "job.sent"):
            assert kind in kinds, kinds
    finally:
        stop_worker(worker)
        node.kill()


def _frame_references(ds: Dataset) -> list[tuple[str, int | None]]:
    """Every (SOP Instance UID, frame) an SR's content or an SC's Source Image Sequence names."""
    found = []
    stack = list(ds.get("ContentSequence", [])) + list(ds.get("SourceImageSequence", []))
    while stack:
        item = stack.pop()
        for reference in [*item.get("ReferencedSOPSequence", []), item]:
            if "ReferencedSOPInstanceUID" in reference:
                frame = reference.get("ReferencedFrameNumber")
                found.append((str(reference.ReferencedSOPInstanceUID), None if frame is None else int(frame)))
        stack.extend(item.get("ContentSequence", []))
    return found


@pytest.mark.parametrize("task", ["ct-histology", "mri-ehcc"])
def test_multi_frame_study_comes_back_analysed_like_its_classic_twin(
        trained, orthanc_factory, redis_db: int, tmp_path: Path, task: str) -> None:  # type: ignore[no-untyped-def]
    """The study as Legacy Converted Enhanced CT/MR goes round the whole loop; the worker finds the
    roles it finds in the classic study, and the SR and SC it sends name the instance and its frame."""
    studies, artifact, _ = trained(task)
    classic = sorted(studies.glob("study-*"))[0]
    converted = tmp_path / "converted"
    shutil.copytree(classic, converted)
    assert convert_study(converted) >= 4
    [(study_uid, series)] = scan_studies([classic]).series.items()
    expected = {role: None if m is None else [m.series.series_uid, m.series.acquisition_number]
                for role, m in group_study(study_uid, series, load_rules()).roles.items()}
    multi_frame = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in converted.glob("*-mf.dcm")}

    node_port = free_port()
    orthanc = orthanc_factory(modalities={"node": ["TRIPHASE", "127.0.0.1", node_port]})
    node = pipeline_node(tmp_path / "node", broker_url=f"redis://127.0.0.1:6379/{redis_db}", artifact=artifact,
                         task=task, destination=(orthanc.aet, orthanc.dicom_port), sender=orthanc.aet)
    node.port = node_port
    node.start()
    worker = start_worker(node, tmp_path / "worker.log")
    try:
        orthanc_study = orthanc.upload(sorted(converted.glob("*.dcm")))
        before = {i["ID"] for i in orthanc.get(f"/studies/{orthanc_study}/instances")}
        orthanc.post("/modalities/node/store", orthanc_study)
        database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
        try:
            state = wait_for_job_state(database, {"sent", "failed", "skipped"}, timeout=200, poll_s=0.5)
            assert state == "sent", (tmp_path / "worker.log").read_text()[-3000:] + node.log()[-2000:]
            # The send step passes through "analysed" again; the analysis's own event carries the roles.
            [analysed] = [e for e in audit_events(database, kind_prefix="job.analysed") if "roles" in (e.detail or {})]
            [study] = list_studies(database)
            assert study.completed_by == "roles"  # multi-frame instances are whole: no quiet period
        finally:
            database.close()
        assert {role: None if m is None else [m["series"], m["acquisition_number"]]
                for role, m in analysed.detail["roles"].items()} == expected
        new = [i["ID"] for i in orthanc.get(f"/studies/{orthanc_study}/instances") if i["ID"] not in before]
    finally:
        stop_worker(worker)
        node.kill()

    outputs = {}
    for number, orthanc_id in enumerate(new):
        path = tmp_path / f"out{number}.dcm"
        path.write_bytes(orthanc.get(f"/instances/{orthanc_id}/file"))
        outputs[path] = pydicom.dcmread(path)
    assert sorted(ds.Modality for ds in outputs.values()) == ["OT"] * (len(outputs) - 1) + ["SR"]
    assert len(outputs) >= 2
    dciodvfy = require_tool("/usr/bin/dciodvfy")
    for path, ds in outputs.items():
        references = [r for r in _frame_references(ds) if r[0] in multi_frame]
        assert references and all(frame is not None and frame >= 1 for _, frame in references), ds.Modality
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        assert [line for line in run.stderr.splitlines() if line.startswith("Error")] == [], ds.Modality
