"""The embedded runner: the outbox itself is the queue, for one machine and no broker.

``triphase demo`` (and a node run without Redis) use it: a thread takes unpublished outbox rows in
order, claims and marks them taken and runs the same task bodies Celery workers run, through the same
:func:`~worker.jobs.run_step`. With no broker to retry a task later, a transient failure is waited
out here, with the task's back-off (:data:`~worker.retry.TASK_RETRIES`), before the next row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from db.repository import publisher_identity
from db.states import JobState
from worker.jobs import TASK_BODIES, WorkerContext, run_step
from worker.retry import TASK_RETRIES, retry_transient

log = logging.getLogger(__name__)


class OutboxRunner:
    def __init__(self, ctx: WorkerContext, *, poll_s: float = 0.2,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self.ctx = ctx
        self.poll_s = poll_s
        self.sleep = sleep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-worker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_task(self, task_name: str, job_id: int) -> JobState:
        """One task to its end: retried after the task's back-off while its failure is transient."""
        return retry_transient(lambda attempt: run_step(task_name, self.ctx, job_id, attempt),
                               TASK_RETRIES[task_name], sleep=self.sleep)

    def run_pending(self) -> int:
        """Run every task the outbox holds now once (those it adds meanwhile wait for the next call).

        Each row is claimed just before it runs (:mod:`db.repository.outbox`), so a row another
        runner or publisher holds is left to it; returns how many ran.
        """
        ran = 0
        owner = publisher_identity()
        for pending in self.ctx.repository.unpublished_outbox():
            claimed = self.ctx.repository.claim_outbox(owner, outbox_ids=[pending.outbox_id])
            if not claimed:
                continue
            outbox_id, job_id, task_name, _queue = claimed[0]
            self.ctx.repository.mark_published(outbox_id)
            if task_name not in TASK_BODIES:
                log.error("unknown task %s for job #%d", task_name, job_id)
                continue
            state = self.run_task(task_name, job_id)
            log.info("job #%d: %s -> %s", job_id, task_name, state)
            ran += 1
        return ran

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_pending()
            except (SQLAlchemyError, ConnectionError, TimeoutError):
                log.exception("embedded runner: database unavailable; retrying")
