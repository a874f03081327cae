from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import NodeProcess


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
