"""Retrospective batch from a real PACS: C-FIND in Orthanc, C-MOVE to the node, queued as batch work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import Database
from db.schema import OutboxEntry
from tests.conftest import free_port
from tests.factories import write_study
from tests.processes import NodeProcess

pytestmark = pytest.mark.interop


def test_batch_from_orthanc(orthanc_factory, tmp_path: Path) -> None:
    node_port = free_port()
    orthanc = orthanc_factory(modalities={"TRIPHASE": ["TRIPHASE", "127.0.0.1", node_port]})
    first, files_a = write_study(tmp_path / "a", series=2, per_series=3)
    second, files_b = write_study(tmp_path / "b", series=1, per_series=2)
    orthanc.upload(files_a)
    orthanc.upload(files_b)
    node = NodeProcess(tmp_path / "node", peers=[{"name": "pacs", "ae_title": orthanc.aet, "host": "127.0.0.1",
                                                   "port": orthanc.dicom_port}], port=node_port)
    node.extra_node = {"quiet_period_s": 3600}
    node.start()
    try:
        dry = node.cli("batch", "pacs", "--from", "pacs", "--query", "ModalitiesInStudy=CT", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["matches"] == 2
        done = node.cli("batch", "pacs", "--from", "pacs", "--query", f"StudyInstanceUID={first}", "--json")
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)["studies"]
        assert row["study_uid"] == first and row["retrieved"] == 6 and row["failed"] == 0 and row["job"]
        listing = {s["study_uid"]: s for s in json.loads(node.cli("studies", "--json").stdout)}
        assert listing[first]["instances"] == 6 and listing[first]["state"] == "complete"
        assert second not in listing
    finally:
        node.kill()
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        with database.session() as s:
            assert s.scalars(select(OutboxEntry.queue)).all() == ["batch"]
    finally:
        database.close()
