"""The hook through which completed studies leave the node.

When a study completes, the node commits a Job (state ``ready``) and an outbox row in one
transaction, and only then calls :meth:`JobDispatcher.dispatch`. A dispatcher that fails, or a
node that dies before calling it, loses nothing: the outbox row stays unpublished and is picked up
again (by :meth:`dispatch` on the next call here, and by the worker's sweeper).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from db.engine import Database
from db.queries import job_study
from db.repository import CompletedStudy, PendingTask
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK

log = logging.getLogger(__name__)


class JobDispatcher(Protocol):
    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        """Hand freshly completed studies on (publish to the broker, run in process, ...)."""


class OutboxOnly:
    """Leave the jobs in the outbox for a sweeper to publish (no broker needed)."""

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        for study in completed:
            log.info("study #%d complete (revision %d, by %s): job #%d %s", study.study_id,
                     study.revision, study.completed_by, study.job_id,
                     "ready" if study.skipped is None else f"skipped ({study.skipped})")


class Collecting:
    """Remember what was dispatched; for embedding the node in a process that polls it."""

    def __init__(self) -> None:
        self.completed: list[CompletedStudy] = []

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        self.completed.extend(completed)


class Outbox(Protocol):
    """The part of :class:`db.repository.Repository` that publishing needs."""

    db: Database

    def unpublished_outbox(self, limit: int = ...) -> list[PendingTask]: ...

    def mark_published(self, outbox_id: int) -> None: ...

    def mark_publish_failed(self, outbox_id: int, error: str) -> None: ...

    def transition_job(self, job_id: int, target: JobState | str, *, reason: str | None = None,
                       **detail: object) -> None: ...


def publish_pending(repository: Outbox, send_task: Callable[[str, int, str], None], *, limit: int = 500) -> int:
    """Publish every unpublished outbox row (oldest first) with ``send_task(name, job_id, queue)``.

    Used by the node right after a study completes and by the worker's sweeper for anything a
    dead broker or a crashed node left behind. A row is marked published only after the broker
    took it; a failure is recorded and the row waits for the next sweep.
    """
    waiting_for = {ANALYSE_TASK: JobState.READY, SEND_TASK: JobState.ANALYSED}
    published = 0
    for outbox_id, job_id, task_name, queue in repository.unpublished_outbox(limit=limit):
        try:
            send_task(task_name, job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the broker is down: keep the row for the sweeper
            repository.mark_publish_failed(outbox_id, f"{type(exc).__name__}: {exc}")
            log.warning("broker unavailable; %s for job #%d stays in the outbox", task_name, job_id)
            return published
        repository.mark_published(outbox_id)
        job = job_study(repository.db, job_id)
        if job is None or job.state != waiting_for.get(task_name):
            published += 1
            continue  # already further along (a republished task): the worker's state check handles it
        try:
            repository.transition_job(job_id, JobState.QUEUED, reason=f"{task_name} published to queue {queue}")
        except ValueError:
            pass  # moved on since it was read
        published += 1
    return published
