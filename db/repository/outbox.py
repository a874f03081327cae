"""The outbox: tasks written with the change that calls for them, claimed, then published.

Publishing a row is three steps, each its own short transaction:

1. **claim**: ``UPDATE outbox SET claimed_by = :me, claimed_until = now + lease WHERE
   published_at IS NULL AND (claimed_until IS NULL OR claimed_until <= now)``. Of two publishers
   that want one row, exactly one gets it (PostgreSQL: ``FOR UPDATE SKIP LOCKED`` picks the rows,
   the ``WHERE`` is checked again on the row it updates; SQLite: one writer at a time).
2. **send** to the broker, outside any transaction;
3. **mark published**, and for ``triphase.analyse`` move the job from ``ready`` to ``queued`` if
   it is still there (a compare-and-set: publishing never moves a job backwards).

The node and a pool process publish what they have just committed at once; the sweeper takes only
rows whose claim has expired (a publisher died or stalled between 1 and 3) and unclaimed rows
older than a grace (a publisher died between its commit and 1), so it does not race the publisher
that is about to claim a row it has just written.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Collection
from typing import NamedTuple

from sqlalchemy import ColumnElement, or_, select, update

from db.repository.base import RepositoryBase, add_event, compare_and_set_job, study_uid_of
from db.schema import OutboxEntry, utcnow
from db.states import JobState
from db.task_names import ANALYSE_TASK

CLAIM_LEASE_S = 60.0
"""How long a claim keeps other publishers off a row; a publish takes milliseconds."""

SWEEP_GRACE_S = 5.0
"""How old an unclaimed row must be before the sweeper takes it from the publisher that wrote it."""


class PendingTask(NamedTuple):
    """An outbox row not yet handed to the broker."""

    outbox_id: int
    job_id: int
    task_name: str
    queue: str


def publisher_identity() -> str:
    """``host:pid`` of this process, as stored in ``outbox.claimed_by`` (asked at each claim: fork-safe)."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}"


def _claimable(now: dt.datetime, grace_s: float | None) -> list[ColumnElement[bool]]:
    conditions = [OutboxEntry.published_at.is_(None),
                  or_(OutboxEntry.claimed_until.is_(None), OutboxEntry.claimed_until <= now)]
    if grace_s is not None:
        conditions.append(or_(OutboxEntry.claimed_by.is_not(None),
                              OutboxEntry.created_at <= now - dt.timedelta(seconds=grace_s)))
    return conditions


class OutboxWrites(RepositoryBase):
    def unpublished_outbox(self, limit: int = 100) -> list[PendingTask]:
        """Tasks not yet handed to the broker, oldest first, claimed or not (a view; publishers claim)."""
        with self.db.session() as session:
            rows = session.execute(
                select(OutboxEntry.id, OutboxEntry.job_id, OutboxEntry.task_name, OutboxEntry.queue)
                .where(OutboxEntry.published_at.is_(None)).order_by(OutboxEntry.id).limit(limit)
            ).all()
            return [PendingTask(*row) for row in rows]

    def claim_outbox(self, owner: str, *, lease_s: float = CLAIM_LEASE_S, grace_s: float | None = None,
                     job_ids: Collection[int] | None = None, outbox_ids: Collection[int] | None = None,
                     limit: int = 100) -> list[PendingTask]:
        """Claim up to ``limit`` unpublished rows for ``owner`` until now + ``lease_s``, oldest first.

        Rows claimed by someone else until later are never returned. ``grace_s`` (the sweeper's)
        leaves alone unclaimed rows younger than that; ``job_ids`` / ``outbox_ids`` narrow the
        rows to those of a publisher's own jobs or rows.
        """
        now = utcnow()
        conditions = _claimable(now, grace_s)
        if job_ids is not None:
            conditions.append(OutboxEntry.job_id.in_(list(job_ids)))
        if outbox_ids is not None:
            conditions.append(OutboxEntry.id.in_(list(outbox_ids)))
        candidates = (select(OutboxEntry.id).where(*conditions).order_by(OutboxEntry.id).limit(limit)
                      .with_for_update(skip_locked=True))
        with self.db.session() as session:
            rows = session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_(candidates.scalar_subquery()), *conditions)
                .values(claimed_by=owner[:64], claimed_until=now + dt.timedelta(seconds=lease_s))
                .returning(OutboxEntry.id, OutboxEntry.job_id, OutboxEntry.task_name, OutboxEntry.queue)
            ).all()
        return sorted(PendingTask(*row) for row in rows)

    def mark_published(self, outbox_id: int) -> bool:
        """The broker has the row's task: mark it, and move a ``ready`` job to ``queued``.

        ``False`` when the row was already marked (another publisher whose claim outlived ours).
        A job that has gone past ``ready`` (its task ran before this mark) is left where it is.
        """
        now = utcnow()
        with self.db.session() as session:
            row = session.execute(
                update(OutboxEntry).where(OutboxEntry.id == outbox_id, OutboxEntry.published_at.is_(None))
                .values(published_at=now, claimed_until=None, attempts=OutboxEntry.attempts + 1)
                .returning(OutboxEntry.job_id, OutboxEntry.task_name, OutboxEntry.queue)
            ).first()
            if row is None:
                return False
            if row.task_name == ANALYSE_TASK:
                study_id = compare_and_set_job(session, row.job_id, JobState.READY, JobState.QUEUED)
                if study_id is not None:
                    add_event(session, "job.queued", f"{row.task_name} published to queue {row.queue}",
                              study_uid=study_uid_of(session, study_id), job_id=row.job_id,
                              detail={"from": JobState.READY.value})
            return True

    def mark_publish_failed(self, outbox_id: int, error: str) -> None:
        """The broker refused the row: record why and release the claim, so the next sweep retries it."""
        with self.db.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == outbox_id)
                            .values(attempts=OutboxEntry.attempts + 1, last_error=error[:2000],
                                    claimed_until=utcnow()))

    def release_claims(self, outbox_ids: Collection[int]) -> None:
        """Give unpublished rows back at once (a publisher stopping early), not when the lease runs out."""
        if not outbox_ids:
            return
        with self.db.session() as session:
            session.execute(update(OutboxEntry)
                            .where(OutboxEntry.id.in_(list(outbox_ids)), OutboxEntry.published_at.is_(None))
                            .values(claimed_until=utcnow()))
