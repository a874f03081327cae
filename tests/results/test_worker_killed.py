"""A worker killed in the middle of an analysis: the task is redelivered and the job completes
once, with one set of predictions and one SR + SC in the PACS (same UIDs)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import Database
from db.schema import Prediction
from node.folder_store import FolderStore
from node.scu import RemoteNode, SendResult, scan, send
from tests.results.conftest import pipeline_node, start_worker, stop_worker, wait_for_job_state
from tests.results.test_broker_outage import PrivateRedis

pytestmark = pytest.mark.interop


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


# After the main process dies, the message comes back only when a new worker's periodic restore of
# unacknowledged messages runs past the visibility timeout: about 100 s here.
@pytest.mark.timeout(360)
@pytest.mark.parametrize("victim", ["pool child", "main process"])
def test_killed_worker_redelivers_and_completes_once(trained, tmp_path: Path, victim: str) -> None:
    studies, artifact, _ = trained("ct-histology")
    broker = PrivateRedis(tmp_path)
    broker.start()
    pacs = FolderStore(tmp_path / "pacs").start()
    node = pipeline_node(tmp_path / "node", broker_url=f"redis://127.0.0.1:{broker.port}/0", artifact=artifact,
                         task="ct-histology", destination=("DEMOPACS", pacs.port), sender="SENDER",
                         quiet_period_s=0.5, completion_poll_s=0.1, visibility_timeout_s=4)
    node.start()

    def start() -> subprocess.Popen:
        return start_worker(node, tmp_path / "worker.log")

    worker = start()
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        time.sleep(3)
        result = SendResult()
        send(scan([sorted(studies.glob("study-*"))[0]], result), RemoteNode("TRIPHASE", "127.0.0.1", node.port),
             calling_ae="SENDER", result=result)
        assert wait_for_job_state(database, {"running"}, 60) == "running"
        if victim == "pool child":
            for child in _children(worker.pid):
                subprocess.run(["kill", "-9", str(child)], check=False)
        else:
            for child in _children(worker.pid):
                subprocess.run(["kill", "-9", str(child)], check=False)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            worker = start()
        state = wait_for_job_state(database, {"sent", "failed", "skipped"}, 300)
        assert state == "sent", (tmp_path / "worker.log").read_text()[-3000:]
        with database.session() as s:
            assert len(s.scalars(select(Prediction)).all()) == 1
        assert len(list((tmp_path / "pacs").rglob("*.dcm"))) == 2  # re-sends replaced, never duplicated
    finally:
        database.close()
        stop_worker(worker)
        node.kill()
        pacs.stop()
        broker.kill()
