"""The broker is down when a study completes: nothing is lost, it is analysed once Redis is back."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import OutboxEntry
from node.scu import RemoteNode, SendResult, scan, send
from tests.conftest import free_port, require_tool
from tests.processes import wait_for_port
from tests.results.conftest import pipeline, wait_for_job_state

pytestmark = pytest.mark.interop


class PrivateRedis:
    """A redis-server of this test's own on a free port, which the test may kill and restart."""

    def __init__(self, folder: Path) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_study_completed_during_a_broker_outage_is_analysed_later(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("mri-ehcc")
    with pipeline(tmp_path, artifact, task="mri-ehcc") as rig:
        node, broker, pacs = rig.node.start(), rig.broker, rig.pacs
        rig.start_worker()
        database = rig.database
        time.sleep(3)  # the worker is up and connected
        broker.kill()
        result = SendResult()
        send(scan([sorted(studies.glob("study-*"))[0]], result), RemoteNode("TRIPHASE", "127.0.0.1", node.port),
             calling_ae="SENDER", result=result)
        assert result.ok
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # completed, but the task could not be published
            with database.session() as s:
                rows = s.execute(select(OutboxEntry.published_at, OutboxEntry.last_error)).all()
            if rows and rows[0].last_error:
                break
            time.sleep(0.3)
        assert rows and rows[0].published_at is None and rows[0].last_error
        broker.start()  # same port
        state = wait_for_job_state(database, {"sent", "failed", "skipped"}, 120, poll_s=0.5)
        assert state == "sent", (tmp_path / "worker.log").read_text()[-3000:]
        assert len(pacs.received) == 2  # one SR, one SC
    shutil.rmtree(tmp_path / "pacs", ignore_errors=True)
