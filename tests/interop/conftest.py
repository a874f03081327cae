from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import NodeProcess, Orthanc


@pytest.fixture
def node_process(tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "node", peers=[
        {"name": "dcmtk", "ae_title": "STORESCU"},
        {"name": "echo", "ae_title": "ECHOSCU"},
        {"name": "orthanc", "ae_title": "ORTHANC"},
        {"name": "tester", "ae_title": "TESTER"},
    ])
    yield node
    node.kill()


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator:
    started: list[Orthanc] = []

    def start(**kwargs: object) -> Orthanc:
        orthanc = Orthanc(tmp_path / f"orthanc{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(orthanc)
        return orthanc.start()

    yield start
    for orthanc in started:
        orthanc.stop()
