"""Jobs: state changes with their audit events, predictions, and the watchdog's re-drive.

Every state change is a compare-and-set (:func:`~db.repository.base.compare_and_set_job`): it
names the state it moves the job from, and reports whether it did. Several processes act on one
job (the node's publisher, pool processes with a task delivered twice, the sweeper, the
watchdog), and the one that loses a race is told so (``False``) instead of moving the job from a
state it never saw; the caller decides whether that is a no-op, a retry later, or a bug.

A task is never sent to the broker from inside a transaction: it is written to the outbox with the
change that calls for it, and published after the commit (:mod:`db.repository.outbox`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session

from db.records import LesionPrediction
from db.repository.base import RepositoryBase, add_event, compare_and_set_job, study_uid_of
from db.schema import Job, OutboxEntry, Prediction, utcnow
from db.states import JobState, check_transition
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE, SEND_TASK
from db.vocabulary import Severity

RESENDABLE = (JobState.SENT, JobState.FAILED, JobState.ANALYSED)
"""States from which ``triphase resend`` queues the send step again."""

WATCHED = (JobState.QUEUED, JobState.RUNNING, JobState.ANALYSED)
"""States in which a job waits for a task: one whose task was lost would wait there for ever."""


class StaleJob(NamedTuple):
    """A job that has waited in one state longer than the lease, and the step that moves it on."""

    job_id: int
    state: JobState
    task_name: str
    queue: str
    idle_s: float


def _as_states(expected: JobState | str | Collection[JobState | str] | None) -> tuple[JobState, ...] | None:
    if expected is None:
        return None
    if isinstance(expected, str):
        return (JobState(expected),)
    return tuple(JobState(state) for state in expected)


def _current_state(session: Session, job_id: int) -> JobState:
    state = session.scalar(select(Job.state).where(Job.id == job_id))
    if state is None:
        raise LookupError(f"no job {job_id}")
    return JobState(state)


class JobWrites(RepositoryBase):
    def transition_job(self, job_id: int, target: JobState | str, *,
                       expected: JobState | str | Collection[JobState | str] | None = None,
                       reason: str | None = None, **detail: object) -> bool:
        """Move a job along the state machine (:mod:`db.states`), with its audit event.

        With ``expected``, only from one of those states: ``False`` (nothing written) when the job
        is elsewhere or another process moved it first. Without it, from whatever state the job is
        in now (the operator's commands). A move the state machine forbids is a bug:
        :class:`~db.states.IllegalTransition`, checked against every expected state up front so
        it shows whatever the race.
        """
        new = JobState(target)
        states = _as_states(expected)
        for state in states or ():
            check_transition(state, new)
        with self.db.session() as session:
            old = _current_state(session, job_id)
            if states is not None and old not in states:
                return False
            study_id = compare_and_set_job(session, job_id, old, new, {} if reason is None else {"reason": reason})
            if study_id is None:
                return False
            add_event(session, f"job.{new.value}", reason or f"{old.value} -> {new.value}",
                      severity=Severity.ERROR if new is JobState.FAILED else Severity.INFO,
                      study_uid=study_uid_of(session, study_id), job_id=job_id,
                      detail={"from": old.value, **detail})
            return True

    def record_analysis(self, job_id: int, *, task: str, model: str, lesions: Sequence[LesionPrediction],
                        detail: Mapping[str, object] | None = None, enqueue_send: bool = False) -> bool:
        """Predictions of every lesion and the job's move from running to analysed, in one transaction.

        ``False`` (nothing written) when the job is no longer running: a duplicate delivery of the
        task finished it first, and its predictions stand. So a job has one set of predictions,
        one row per lesion, whatever the deliveries.
        """
        with self.db.session() as session:
            study_id = compare_and_set_job(session, job_id, JobState.RUNNING, JobState.ANALYSED,
                                           {"task": task, "model": model, "reason": None})
            if study_id is None:
                return False
            session.execute(delete(Prediction).where(Prediction.job_id == job_id))
            session.add_all(
                Prediction(job_id=job_id, lesion_id=lesion.lesion_id, task=task, model=model, label=lesion.label,
                           probabilities=dict(lesion.probabilities), roi_source=lesion.roi_source)
                for lesion in lesions
            )
            add_event(session, "job.analysed", f"{len(lesions)} lesion(s) with model {model[:12]}",
                      study_uid=study_uid_of(session, study_id), job_id=job_id,
                      detail={"from": JobState.RUNNING.value, **(detail or {})})
            if enqueue_send:
                session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))
            return True

    def requeue_send(self, job_id: int) -> None:
        """``triphase resend``: a sent, failed or analysed job's send step goes back to the queue.

        A failed job that was never analysed has nothing to send (a failed analysis is redone by
        completing the study again); refused with :class:`ValueError`, like a job in another state.
        """
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise LookupError(f"no job {job_id}")
            old = JobState(job.state)
            if old not in RESENDABLE:
                raise ValueError(f"job {job_id} is {old.value}; only a sent, failed or analysed job can be resent")
            if job.model is None and old is JobState.FAILED:  # its analysis failed
                raise ValueError(f"job {job_id} was never analysed; there are no results to send")
            if compare_and_set_job(session, job_id, old, JobState.QUEUED) is None:
                raise ValueError(f"job {job_id} changed while it was being resent; try again")
            session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))
            add_event(session, "job.resend", f"{old.value} -> queued for sending again",
                      study_uid=study_uid_of(session, job.study_id), job_id=job_id, detail={"from": old.value})

    def stale_jobs(self, lease_s: float, *, now: dt.datetime | None = None, limit: int = 100) -> list[StaleJob]:
        """Jobs waiting in a :data:`WATCHED` state for longer than ``lease_s`` with nothing of theirs
        left to publish: the watchdog's candidates (it still asks the broker for a live task)."""
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=lease_s)
        own = OutboxEntry.job_id == Job.id
        publishing = exists().where(own, or_(OutboxEntry.published_at.is_(None), OutboxEntry.created_at > cutoff))
        last_queue = (select(OutboxEntry.queue).where(own).order_by(OutboxEntry.id.desc()).limit(1)
                      .correlate(Job).scalar_subquery())
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.state, Job.model, Job.updated_at, last_queue.label("queue"))
                .where(Job.state.in_([s.value for s in WATCHED]), Job.updated_at <= cutoff, ~publishing)
                .order_by(Job.updated_at).limit(limit)
            ).all()
        return [StaleJob(row.id, JobState(row.state), _step_after(JobState(row.state), row.model),
                         row.queue or ARRIVAL_QUEUE, (now - row.updated_at).total_seconds()) for row in rows]

    def redrive_job(self, stale: StaleJob, lease_s: float) -> bool:
        """Queue ``stale``'s step again (a new outbox row) with the audit event ``job.redriven``.

        The job's state does not change; its ``updated_at`` does, so it is re-driven at most once a
        lease. ``False`` when the job moved on since it was found stale.
        """
        now = utcnow()
        with self.db.session() as session:
            touched = session.execute(
                update(Job).where(Job.id == stale.job_id, Job.state == stale.state.value,
                                  Job.updated_at <= now - dt.timedelta(seconds=lease_s))
                .values(updated_at=now).returning(Job.study_id)
            ).first()
            if touched is None:
                return False
            session.add(OutboxEntry(job_id=stale.job_id, task_name=stale.task_name, queue=stale.queue))
            add_event(session, "job.redriven",
                      f"{stale.state.value} for {stale.idle_s:.0f} s with no task alive: {stale.task_name} again",
                      severity=Severity.WARNING, study_uid=study_uid_of(session, touched.study_id),
                      job_id=stale.job_id, detail={"state": stale.state.value, "task": stale.task_name,
                                                   "queue": stale.queue, "idle_s": round(stale.idle_s, 1)})
            return True


def _step_after(state: JobState, model: str | None) -> str:
    """The task that moves a job on: the send once it has been analysed (a resend included)."""
    return SEND_TASK if state is JobState.ANALYSED or model is not None else ANALYSE_TASK
