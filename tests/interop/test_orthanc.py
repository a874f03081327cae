"""A real Orthanc as the PACS: it pushes a study to the node, and receives from triphase send."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from db.engine import Database
from db.queries import audit_events, instance_paths
from tests.factories import write_study
from tests.processes import NodeProcess

pytestmark = pytest.mark.interop


def test_orthanc_pushes_a_study_to_the_node(node_process: NodeProcess, orthanc_factory, tmp_path: Path) -> None:
    node_process.extra_node = {"quiet_period_s": 1.0, "completion_poll_s": 0.2}
    node_process.start()
    orthanc = orthanc_factory(modalities={"node": ["TRIPHASE", "127.0.0.1", node_process.port]})
    study_uid, files = write_study(tmp_path / "study", series=3, per_series=5)
    orthanc_study = orthanc.upload(files)
    echo = orthanc.post("/modalities/node/echo", {})
    assert echo in ({}, b"", b"{}") or isinstance(echo, dict)
    orthanc.post("/modalities/node/store", orthanc_study)

    listing = _wait_for(lambda: [s for s in json.loads(node_process.cli("studies", "--json").stdout)
                                 if s["state"] == "complete"], timeout=30)
    assert [(s["study_uid"], s["series"], s["instances"], s["calling_ae"]) for s in listing] == [
        (study_uid, 3, 15, "ORTHANC")]
    # Three plain CT series: the rules find no delayed phase, so the job is skipped, never analysed.
    assert (listing[0]["latest_job_state"], listing[0]["completed_by"]) == ("skipped", "quiet")
    database = Database(f"sqlite:///{node_process.data_dir / 'triphase.db'}")
    try:
        paths = instance_paths(database, study_uid)
        assert len(paths) == 15
        assert all((node_process.data_dir / "spool" / p).is_file() for p in paths.values())
        kinds = [e.kind for e in audit_events(database)]
        assert "association.accepted" in kinds and "study.complete" in kinds and "job.skipped" in kinds
        [skipped] = audit_events(database, kind_prefix="job.skipped")
        assert "delayed" in skipped.message
    finally:
        database.close()


def test_triphase_sends_to_orthanc(orthanc_factory, tmp_path: Path) -> None:
    orthanc = orthanc_factory()
    node = NodeProcess(tmp_path / "cli", peers=[])
    node.write_config()
    target = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    assert node.cli("echo", target).returncode == 0
    study_uid, _ = write_study(tmp_path / "study", series=2, per_series=4)
    sent = node.cli("send", str(tmp_path / "study"), "--to", target)
    assert sent.returncode == 0, sent.stderr
    found = orthanc.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
    assert len(found) == 1
    assert len(orthanc.get(f"/studies/{found[0]}/instances")) == 8


def _wait_for(fetch, timeout: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")
