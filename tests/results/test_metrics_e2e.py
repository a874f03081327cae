"""/metrics of a real node process and a real prefork worker after a study went through both.

The analysis and the send run in the worker's pool child, while the parent serves /metrics: the
counts seen there prove the pool processes' values are added up (multiprocess mode).
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from node.scu import RemoteNode, SendResult, scan, send
from tests.conftest import free_port
from tests.node.test_metrics import Samples, scrape
from tests.results.conftest import pipeline, wait_for_job_state

pytestmark = pytest.mark.interop


def _wait_for_scrape(port: int, timeout: float = 30) -> Samples:
    """A scrape once the outbox depth reads 0: the sweeper process counts it about once a second."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(port)
            if samples.get(("triphase_queue_depth", (("queue", "outbox"),))) == 0 or time.monotonic() > deadline:
                return samples
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.mark.timeout(300)  # a worker process imports torch before it takes a task: slow on a busy machine
def test_worker_and_node_metrics_after_a_job(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("ct-histology")
    node_metrics, worker_metrics = free_port(), free_port()
    with pipeline(tmp_path, artifact, quiet_period_s=0.5, completion_poll_s=0.1, metrics_port=node_metrics) as rig:
        node = rig.node
        node.extra_toml = f"[worker]\nmetrics_port = {worker_metrics}\n" + node.extra_toml
        node.start()
        rig.start_worker()
        database = rig.database
        result = SendResult()
        files = scan([sorted(studies.glob("study-*"))[0]], result)
        send(files, RemoteNode("TRIPHASE", "127.0.0.1", node.port), calling_ae="SENDER", result=result)
        assert wait_for_job_state(database, {"sent", "failed", "skipped"}, 120) == "sent", \
            (tmp_path / "worker.log").read_text()[-3000:]

        worker_samples = _wait_for_scrape(worker_metrics)
        [directory] = node.data_dir.glob("metrics-*")
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        # The worker takes the job running -> analysed -> sent; publishing the send step leaves the
        # analysed job where it is (publishing never moves a job backwards). Each move is counted once.
        for state, times in {"running": 1, "analysed": 1, "sent": 1}.items():
            assert worker_samples[("triphase_jobs_total", (("state", state),))] == times, state
        assert worker_samples[("triphase_sends_total", (("destination", "pacs"), ("result", "sent")))] == 1
        for step in ("analyse", "send"):
            assert worker_samples[("triphase_step_seconds_count", (("step", step),))] == 1, step
            assert worker_samples[("triphase_step_seconds_sum", (("step", step),))] > 0
        assert worker_samples[("triphase_queue_depth", (("queue", "outbox"),))] == 0
        assert worker_samples[("triphase_queue_depth", (("queue", "arrival"),))] == 0

        node_samples = scrape(node_metrics)
        assert node_samples[("triphase_instances_stored_total", ())] == len(files)
        assert node_samples[("triphase_studies_completed_total", (("reason", "quiet"),))] == 1
        assert node_samples[("triphase_jobs_total", (("state", "ready"),))] == 1
        # queued once: by the node as it publishes, or by the worker if its task began before that mark
        queued = ("triphase_jobs_total", (("state", "queued"),))
        assert node_samples.get(queued, 0) + worker_samples.get(queued, 0) == 1
        assert ("triphase_jobs_total", (("state", "sent"),)) not in node_samples  # the worker's, not the node's
    assert not list(node.data_dir.glob("metrics-*"))  # removed when the worker stopped
