"""The embedded runner: the outbox itself is the queue, for one machine and no broker.

``triphase demo`` (and a node run without Redis) use it: a thread takes unpublished outbox rows in
order, marks them taken and runs the same task bodies Celery workers run. With a broker, the node
publishes to Celery instead and this runner is not started.
"""

from __future__ import annotations

import logging
import threading

from db.task_names import ANALYSE_TASK, SEND_TASK
from db.states import JobState
from worker.jobs import WorkerContext, run_analyse, run_send

log = logging.getLogger(__name__)

TASKS = {ANALYSE_TASK: run_analyse, SEND_TASK: run_send}


class OutboxRunner:
    def __init__(self, ctx: WorkerContext, *, poll_s: float = 0.2) -> None:
        self.ctx = ctx
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_pending(self) -> int:
        """Run every unpublished task once; returns how many ran."""
        ran = 0
        for outbox_id, job_id, task_name, _queue in self.ctx.repository.unpublished_outbox():
            self.ctx.repository.mark_published(outbox_id)
            body = TASKS.get(task_name)
            if body is None:
                log.error("unknown task %s for job #%d", task_name, job_id)
                continue
            try:
                state = body(self.ctx, job_id)
                log.info("job #%d: %s -> %s", job_id, task_name, state)
            except Exception as exc:  # noqa: BLE001 - park the job with a reason, keep running
                log.exception("job #%d: %s failed", job_id, task_name)
                try:
                    self.ctx.repository.transition_job(job_id, JobState.FAILED,
                                                       reason=f"{task_name}: {type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001
                    log.exception("could not park job #%d", job_id)
            ran += 1
        return ran

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_pending()
            except Exception:  # noqa: BLE001
                log.exception("embedded runner: database unavailable; retrying")
