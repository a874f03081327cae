"""The hook through which completed studies leave the node.

When a study completes, the node commits a Job (state ``ready``) and an outbox row in one
transaction, and only then calls :meth:`JobDispatcher.dispatch`. A dispatcher that fails, or a
node that dies before calling it, loses nothing: the outbox row stays unpublished and is picked up
again (by :meth:`dispatch` on the next call here, and by the worker's sweeper). Publishers claim
a row before they send it (:mod:`db.repository.outbox`), so no two of them publish it at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from db.engine import Database
from db.repository import CompletedStudy, PendingTask, publisher_identity

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
    """The part of :class:`db.repository.Repository` that publishing needs (:mod:`db.repository.outbox`)."""

    db: Database

    def claim_outbox(self, owner: str, *, lease_s: float = ..., grace_s: float | None = ...,
                     job_ids: Collection[int] | None = ..., outbox_ids: Collection[int] | None = ...,
                     limit: int = ...) -> list[PendingTask]: ...

    def mark_published(self, outbox_id: int) -> bool: ...

    def mark_publish_failed(self, outbox_id: int, error: str) -> None: ...

    def release_claims(self, outbox_ids: Collection[int]) -> None: ...


def publish_pending(repository: Outbox, send_task: Callable[[str, int, str], None], *,
                    grace_s: float | None = None, job_ids: Collection[int] | None = None, limit: int = 500) -> int:
    """Claim, publish with ``send_task(name, job_id, queue)`` and mark the outbox's rows, oldest first.

    Used by the node right after a study completes, by a pool process right after an analysis
    (``job_ids``: its own job) and by the worker's sweeper (``grace_s``) for what a dead broker or
    a crashed publisher left behind. A row is claimed first, so no two publishers send it; it is
    marked published only after the broker took it; a failure is recorded, the remaining claims
    are released and the rows wait for the next sweep. Publishing moves a job only from ``ready``
    to ``queued`` (:meth:`~db.repository.Repository.mark_published`), never backwards.
    """
    claimed = repository.claim_outbox(publisher_identity(), grace_s=grace_s, job_ids=job_ids, limit=limit)
    published = 0
    for index, (outbox_id, job_id, task_name, queue) in enumerate(claimed):
        try:
            send_task(task_name, job_id, queue)
        except Exception as exc:  # noqa: BLE001 - the broker is down: keep the rows for the sweeper
            repository.mark_publish_failed(outbox_id, f"{type(exc).__name__}: {exc}")
            repository.release_claims([task.outbox_id for task in claimed[index + 1:]])
            log.warning("broker unavailable; %s for job #%d stays in the outbox", task_name, job_id)
            return published
        repository.mark_published(outbox_id)
        published += 1
    return published
