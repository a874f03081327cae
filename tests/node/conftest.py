"""An in-process node on a free port, with a real database and spool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from db.engine import Database
from db.repository import Repository
from node.completion import RoleCheck
from node.dispatch import Collecting
from node.scp import DicomNode
from node.settings import NodeSettings, PeerSettings
from node.spool import Spool


@dataclass
class RunningNode:
    node: DicomNode
    spool: Spool
    database: Database
    repository: Repository
    dispatcher: Collecting

    @property
    def port(self) -> int:
        return self.node.port


NodeFactory = Callable[..., RunningNode]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[NodeFactory]:
    started: list[RunningNode] = []

    def start(database: Database, role_check: RoleCheck | None = None, **overrides: object) -> RunningNode:
        defaults: dict[str, object] = {
            "port": 0, "quiet_period_s": 30.0, "completion_poll_s": 0.1, "min_free_disk_mb": 0,
            "shutdown_grace_s": 2.0, "idle_timeout_s": 10.0,
            "peers": (PeerSettings(name="pacs", ae_title="PACS"),),
        }
        settings = NodeSettings.model_validate(defaults | overrides)
        spool = Spool(tmp_path / f"spool{len(started)}", min_free_bytes=settings.min_free_disk_mb * 1024 * 1024)
        repository = Repository(database)
        dispatcher = Collecting()
        node = DicomNode(settings, spool, repository, dispatcher, role_check=role_check)
        node.start()
        running = RunningNode(node, spool, database, repository, dispatcher)
        started.append(running)
        return running

    yield start
    for running in started:
        running.node.shutdown(grace_s=0)
