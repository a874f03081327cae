"""Jobs and the outbox: state changes with their audit events, predictions, tasks to publish.

A task is never sent to the broker from inside a transaction: it is written to the outbox with the
change that calls for it, and published after the commit (by the node, or the worker's sweeper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import delete, select, update

from db.records import LesionPrediction
from db.repository.base import RepositoryBase, add_event, locked_job, study_uid_of
from db.schema import OutboxEntry, Prediction, utcnow
from db.states import JobState, check_transition
from db.task_names import ARRIVAL_QUEUE, SEND_TASK
from db.vocabulary import Severity


class PendingTask(NamedTuple):
    """An outbox row not yet handed to the broker."""

    outbox_id: int
    job_id: int
    task_name: str
    queue: str


class JobWrites(RepositoryBase):
    def transition_job(self, job_id: int, target: JobState | str, *, reason: str | None = None,
                       **detail: object) -> None:
        """Move a job along the state machine (:mod:`db.states`), with its audit event."""
        with self.db.session() as session:
            job = locked_job(session, job_id)
            new = check_transition(job.state, target)
            old = job.state
            job.state = new.value
            job.updated_at = utcnow()
            if reason is not None:
                job.reason = reason
            add_event(session, f"job.{new.value}", reason or f"{old} -> {new.value}",
                      severity=Severity.ERROR if new is JobState.FAILED else Severity.INFO,
                      study_uid=study_uid_of(session, job.study_id), job_id=job_id, detail={"from": old, **detail})

    def record_analysis(self, job_id: int, *, task: str, model: str, lesions: Sequence[LesionPrediction],
                        detail: Mapping[str, object] | None = None, enqueue_send: bool = False) -> None:
        """Predictions of every lesion and the job's move to analysed, in one transaction.

        Re-running an analysis (a redelivered task) replaces the job's predictions: one row per
        lesion, never two.
        """
        with self.db.session() as session:
            job = locked_job(session, job_id)
            new = check_transition(job.state, JobState.ANALYSED)
            session.execute(delete(Prediction).where(Prediction.job_id == job_id))
            session.add_all(
                Prediction(job_id=job_id, lesion_id=lesion.lesion_id, task=task, model=model, label=lesion.label,
                           probabilities=dict(lesion.probabilities), roi_source=lesion.roi_source)
                for lesion in lesions
            )
            old, job.state, job.task, job.model, job.updated_at = job.state, new.value, task, model, utcnow()
            job.reason = None
            add_event(session, "job.analysed", f"{len(lesions)} lesion(s) with model {model[:12]}",
                      study_uid=study_uid_of(session, job.study_id), job_id=job_id,
                      detail={"from": old, **(detail or {})})
            if enqueue_send:
                session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))

    def requeue_send(self, job_id: int) -> None:
        """``triphase resend``: a sent or failed job's send step goes back to the queue."""
        with self.db.session() as session:
            job = locked_job(session, job_id)
            if job.state not in (JobState.SENT.value, JobState.FAILED.value, JobState.ANALYSED.value):
                raise ValueError(f"job {job_id} is {job.state}; only a sent, failed or analysed job can be resent")
            old = job.state
            job.state = check_transition(job.state, JobState.QUEUED).value
            job.updated_at = utcnow()
            session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))
            add_event(session, "job.resend", f"{old} -> queued for sending again",
                      study_uid=study_uid_of(session, job.study_id), job_id=job_id, detail={"from": old})

    def unpublished_outbox(self, limit: int = 100) -> list[PendingTask]:
        """Tasks not yet handed to the broker, oldest first."""
        with self.db.session() as session:
            rows = session.execute(
                select(OutboxEntry.id, OutboxEntry.job_id, OutboxEntry.task_name, OutboxEntry.queue)
                .where(OutboxEntry.published_at.is_(None)).order_by(OutboxEntry.id).limit(limit)
            ).all()
            return [PendingTask(*row) for row in rows]

    def mark_published(self, outbox_id: int) -> None:
        with self.db.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == outbox_id)
                            .values(published_at=utcnow(), attempts=OutboxEntry.attempts + 1))

    def mark_publish_failed(self, outbox_id: int, error: str) -> None:
        with self.db.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == outbox_id)
                            .values(attempts=OutboxEntry.attempts + 1, last_error=error[:2000]))
