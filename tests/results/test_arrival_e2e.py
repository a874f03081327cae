"""End to end on real servers: Orthanc pushes a study, the node completes it, a Celery worker
(real Redis) analyses it, and the SR and SC appear in Orthanc in the same study."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import redis

from db.engine import Database
from db.queries import audit_events
from tests.conftest import free_port
from tests.results.conftest import pipeline_node, start_worker, stop_worker

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
