"""The hook through which completed studies leave the node.

When a study completes, the node commits a Job (state ``ready``) and an outbox row in one
transaction, and only then calls :meth:`JobDispatcher.dispatch`. A dispatcher that fails, or a
node that dies before calling it, loses nothing: the outbox row stays unpublished and is picked up
again (by :meth:`dispatch` on the next call here, and by the worker's sweeper).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from db.repository import CompletedStudy

log = logging.getLogger(__name__)


class JobDispatcher(Protocol):
    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        """Hand freshly completed studies on (publish to the broker, run in process, ...)."""


class OutboxOnly:
    """Leave the jobs in the outbox for a sweeper to publish (no broker needed)."""

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        for study in completed:
            log.info("study #%d complete (revision %d, by %s): job #%d ready", study.study_id,
                     study.revision, study.completed_by, study.job_id)


class Collecting:
    """Remember what was dispatched; for embedding the node in a process that polls it."""

    def __init__(self) -> None:
        self.completed: list[CompletedStudy] = []

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        self.completed.extend(completed)
