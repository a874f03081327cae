"""A worker killed in the middle of an analysis: the task is redelivered and the job completes
once, with one set of predictions and one SR + SC in the PACS (same UIDs)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db.schema import Prediction
from node.scu import RemoteNode, SendResult, scan, send
from tests.processes import child_pids
from tests.results.conftest import pipeline, wait_for_job_state

pytestmark = pytest.mark.interop


# After the main process dies, the message comes back only when a new worker's periodic restore of
# unacknowledged messages runs past the visibility timeout: about 100 s here.
@pytest.mark.timeout(360)
@pytest.mark.parametrize("victim", ["pool child", "main process"])
def test_killed_worker_redelivers_and_completes_once(trained, tmp_path: Path, victim: str) -> None:
    studies, artifact, _ = trained("ct-histology")
    with pipeline(tmp_path, artifact, quiet_period_s=0.5, completion_poll_s=0.1, visibility_timeout_s=4) as rig:
        node = rig.node.start()
        worker = rig.start_worker()
        database = rig.database
        time.sleep(3)
        result = SendResult()
        send(scan([sorted(studies.glob("study-*"))[0]], result), RemoteNode("TRIPHASE", "127.0.0.1", node.port),
             calling_ae="SENDER", result=result)
        assert wait_for_job_state(database, {"running"}, 60) == "running"
        if victim == "pool child":
            for child in child_pids(worker.pid):
                subprocess.run(["kill", "-9", str(child)], check=False)
        else:
            for child in child_pids(worker.pid):
                subprocess.run(["kill", "-9", str(child)], check=False)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            worker = rig.start_worker()
        state = wait_for_job_state(database, {"sent", "failed", "skipped"}, 300)
        assert state == "sent", (tmp_path / "worker.log").read_text()[-3000:]
        with database.session() as s:
            assert len(s.scalars(select(Prediction)).all()) == 1
        assert len(list((tmp_path / "pacs").rglob("*.dcm"))) == 2  # re-sends replaced, never duplicated
