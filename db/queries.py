"""Read-only views of the audit database for the command line and the worker."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypedDict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.engine import Database
from db.schema import AuditEvent, Instance, Job, OutboxEntry, Prediction, ReaderRead, Series, Study, TruthLabel
from db.states import JobState
from db.vocabulary import CompletedBy


class StudySummaryJson(TypedDict):
    """:class:`StudySummary` as ``triphase studies --json`` prints it (times in ISO 8601)."""

    study_uid: str
    state: str
    revision: int
    series: int
    instances: int
    calling_ae: str | None
    first_received_at: str
    last_received_at: str
    completed_at: str | None
    completed_by: str | None
    latest_job_id: int | None
    latest_job_state: str | None


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    state: str
    revision: int
    series: int
    instances: int
    calling_ae: str | None
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    completed_at: dt.datetime | None
    completed_by: CompletedBy | None
    latest_job_id: int | None
    latest_job_state: str | None

    def as_json(self) -> StudySummaryJson:
        return StudySummaryJson(
            study_uid=self.study_uid, state=self.state, revision=self.revision, series=self.series,
            instances=self.instances, calling_ae=self.calling_ae,
            first_received_at=self.first_received_at.isoformat(), last_received_at=self.last_received_at.isoformat(),
            completed_at=self.completed_at.isoformat() if self.completed_at else None,
            completed_by=None if self.completed_by is None else self.completed_by.value,
            latest_job_id=self.latest_job_id, latest_job_state=self.latest_job_state,
        )


def list_studies(database: Database, *, limit: int = 1000) -> list[StudySummary]:
    """Studies, newest first, with series and instance counts and their latest job."""
    with database.session() as session:
        counts = (
            select(Series.study_id, func.count(func.distinct(Series.id)).label("series"),
                   func.count(Instance.id).label("instances"))
            .join(Instance, Instance.series_id == Series.id, isouter=True)
            .group_by(Series.study_id).subquery()
        )
        latest_job = (
            select(Job.study_id, func.max(Job.id).label("job_id")).group_by(Job.study_id).subquery()
        )
        rows = session.execute(
            select(Study, func.coalesce(counts.c.series, 0), func.coalesce(counts.c.instances, 0),
                   latest_job.c.job_id, Job.state)
            .join(counts, counts.c.study_id == Study.id, isouter=True)
            .join(latest_job, latest_job.c.study_id == Study.id, isouter=True)
            .join(Job, Job.id == latest_job.c.job_id, isouter=True)
            .order_by(Study.last_received_at.desc()).limit(limit)
        ).all()
        return [
            StudySummary(s.study_uid, s.state, s.revision, n_series, n_instances, s.calling_ae,
                         s.first_received_at, s.last_received_at, s.completed_at, s.completed_by,
                         job_id, job_state)
            for s, n_series, n_instances, job_id, job_state in rows
        ]


def instance_paths(database: Database, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> spool-relative path for one study."""
    with database.session() as session:
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.path).join(Series).join(Study)
            .where(Study.study_uid == study_uid)
        ).all()
        return {sop_instance_uid: path for sop_instance_uid, path in rows}


def audit_events(database: Database, *, kind_prefix: str | None = None, study_uid: str | None = None,
                 limit: int = 10_000) -> list[AuditEvent]:
    with database.session() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if kind_prefix:
            query = query.where(AuditEvent.kind.startswith(kind_prefix))
        if study_uid:
            query = query.where(AuditEvent.study_uid == study_uid)
        return list(session.scalars(query.limit(limit)))


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownStudy:
    study_uid: str
    patient_id: str | None
    accession_number: str | None


def known_studies(database: Database) -> list[KnownStudy]:
    """Every received study's UID, patient id and accession number (import validation)."""
    with database.session() as session:
        rows = session.execute(select(Study.study_uid, Study.patient_id, Study.accession_number)).all()
        return [KnownStudy(*row) for row in rows]


def truth_rows(database: Database) -> list[TruthLabel]:
    with database.session() as session:
        return list(session.scalars(select(TruthLabel).order_by(TruthLabel.id)))


def reader_reads(database: Database) -> list[ReaderRead]:
    with database.session() as session:
        return list(session.scalars(select(ReaderRead).order_by(ReaderRead.id)))


@dataclass(frozen=True)
class PredictionRow:
    """A prediction with its study's identity (what evaluation joins to the truth)."""

    prediction_id: int
    job_id: int
    study_uid: str
    study_revision: int
    patient_id: str | None
    lesion_id: str
    task: str
    model: str
    label: str
    probabilities: dict[str, float]
    created_at: dt.datetime


def prediction_rows(database: Database, *, model: str | None = None, task: str | None = None,
                    since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[PredictionRow]:
    """Predictions joined to their job's study; ``model`` is a hash prefix."""
    with database.session() as session:
        query = (select(Prediction.id, Prediction.job_id, Study.study_uid, Job.study_revision, Study.patient_id,
                        Prediction.lesion_id, Prediction.task, Prediction.model, Prediction.label,
                        Prediction.probabilities, Prediction.created_at)
                 .join(Job, Job.id == Prediction.job_id).join(Study, Study.id == Job.study_id)
                 .order_by(Prediction.id))
        if model:
            query = query.where(Prediction.model.startswith(model))
        if task:
            query = query.where(Prediction.task == task)
        if since:
            query = query.where(Prediction.created_at >= since)
        if until:
            query = query.where(Prediction.created_at < until)
        return [PredictionRow(*row) for row in session.execute(query)]


def job_outcomes(database: Database, *, states: tuple[str, ...] = (JobState.SKIPPED, JobState.FAILED),
                 since: dt.datetime | None = None, until: dt.datetime | None = None
                 ) -> list[tuple[str, str, str | None]]:
    """(study UID, state, reason) of the latest job of each study in ``states``."""
    with database.session() as session:
        latest = select(func.max(Job.id).label("id")).group_by(Job.study_id).subquery()
        query = (select(Study.study_uid, Job.state, Job.reason).join(latest, latest.c.id == Job.id)
                 .join(Study, Study.id == Job.study_id).where(Job.state.in_(states)))
        if since:
            query = query.where(Job.updated_at >= since)
        if until:
            query = query.where(Job.updated_at < until)
        return [(study_uid, state, reason) for study_uid, state, reason in session.execute(query)]


# --- web console ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesRow:
    series_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    instances: int


@dataclass(frozen=True)
class JobRow:
    job_id: int
    study_revision: int
    state: str
    reason: str | None
    task: str | None
    model: str | None
    attempts: int
    shadow: bool
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class RevisionArrival:
    """When the first and the last instance of one study revision arrived."""

    revision: int
    first_at: dt.datetime
    last_at: dt.datetime
    instances: int


@dataclass(frozen=True)
class StudyDetail:
    """One study as the console's study page shows it; ``patient_id`` is shown only when enabled."""

    study_uid: str
    patient_id: str | None
    accession_number: str | None
    study_date: str | None
    state: str
    revision: int
    calling_ae: str | None
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    completed_at: dt.datetime | None
    completed_by: CompletedBy | None
    series: list[SeriesRow]
    jobs: list[JobRow]
    arrivals: list[RevisionArrival]


def _series_rows(session: Session, study_id: int) -> list[SeriesRow]:
    rows = session.execute(
        select(Series.series_uid, Series.modality, Series.series_number, Series.series_description,
               func.count(Instance.id))
        .join(Instance, Instance.series_id == Series.id, isouter=True)
        .where(Series.study_id == study_id).group_by(Series.id).order_by(Series.series_number, Series.id)
    ).all()
    return [SeriesRow(*row) for row in rows]


def _arrivals(session: Session, study_id: int) -> list[RevisionArrival]:
    rows = session.execute(
        select(Instance.study_revision, func.min(Instance.received_at), func.max(Instance.received_at),
               func.count(Instance.id))
        .join(Series, Series.id == Instance.series_id).where(Series.study_id == study_id)
        .group_by(Instance.study_revision).order_by(Instance.study_revision)
    ).all()
    # Aggregates bypass the column type, so SQLite hands back naive (UTC) datetimes.
    return [RevisionArrival(revision, _aware(first), _aware(last), n) for revision, first, last, n in rows]


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def study_detail(database: Database, study_uid: str) -> StudyDetail | None:
    """A study with its series, jobs (newest first) and arrival times per revision; None if unknown."""
    with database.session() as session:
        study = session.scalars(select(Study).where(Study.study_uid == study_uid)).one_or_none()
        if study is None:
            return None
        jobs = session.execute(
            select(Job.id, Job.study_revision, Job.state, Job.reason, Job.task, Job.model, Job.attempts,
                   Job.shadow, Job.created_at, Job.updated_at)
            .where(Job.study_id == study.id).order_by(Job.id.desc())
        ).all()
        return StudyDetail(
            study.study_uid, study.patient_id, study.accession_number, study.study_date, study.state,
            study.revision, study.calling_ae, study.first_received_at, study.last_received_at, study.completed_at,
            study.completed_by, _series_rows(session, study.id),
            [JobRow(job_id, revision, state, reason, task, model, attempts, bool(shadow), created, updated)
             for job_id, revision, state, reason, task, model, attempts, shadow, created, updated in jobs],
            _arrivals(session, study.id),
        )


@dataclass(frozen=True)
class PatientIdentity:
    patient_id: str | None
    accession_number: str | None


def patient_identities(database: Database) -> dict[str, PatientIdentity]:
    """Study UID -> patient id and accession number (for a console configured to show them)."""
    with database.session() as session:
        rows = session.execute(select(Study.study_uid, Study.patient_id, Study.accession_number)).all()
        return {uid: PatientIdentity(patient_id, accession) for uid, patient_id, accession in rows}


@dataclass(frozen=True)
class FailureEvent:
    """An audit event that reports a failure or refusal, with its job's state now (if it names a job)."""

    event_id: int
    at: dt.datetime
    kind: str
    severity: str
    message: str
    study_uid: str | None
    sop_instance_uid: str | None
    association_id: int | None
    job_id: int | None
    job_state: str | None


def failure_events(database: Database, kinds: tuple[str, ...], *, limit: int = 500) -> list[FailureEvent]:
    """Audit events of ``kinds``, newest first, each with the current state of the job it names."""
    with database.session() as session:
        rows = session.execute(
            select(AuditEvent.id, AuditEvent.at, AuditEvent.kind, AuditEvent.severity, AuditEvent.message,
                   AuditEvent.study_uid, AuditEvent.sop_instance_uid, AuditEvent.association_id,
                   AuditEvent.job_id, Job.state)
            .join(Job, Job.id == AuditEvent.job_id, isouter=True)
            .where(AuditEvent.kind.in_(kinds)).order_by(AuditEvent.id.desc()).limit(limit)
        ).all()
        return [FailureEvent(event_id, at, kind, severity, message, study_uid, sop_uid, association_id, job_id, state)
                for event_id, at, kind, severity, message, study_uid, sop_uid, association_id, job_id, state in rows]


@dataclass(frozen=True)
class ModelUsage:
    """How much one model version has been used for one task, according to the predictions."""

    model: str
    task: str
    predictions: int
    jobs: int
    first_at: dt.datetime
    last_at: dt.datetime


def model_usage(database: Database) -> list[ModelUsage]:
    """Every (model, task) that made predictions, most recently used first."""
    with database.session() as session:
        rows = session.execute(
            select(Prediction.model, Prediction.task, func.count(Prediction.id),
                   func.count(func.distinct(Prediction.job_id)), func.min(Prediction.created_at),
                   func.max(Prediction.created_at))
            .group_by(Prediction.model, Prediction.task).order_by(func.max(Prediction.created_at).desc())
        ).all()
        return [ModelUsage(model, task, n, jobs, _aware(first), _aware(last))
                for model, task, n, jobs, first, last in rows]


@dataclass(frozen=True)
class LesionResultRow:
    job_id: int
    lesion_id: str
    label: str
    probabilities: dict[str, float]
    roi_source: str


def lesion_results(database: Database, job_ids: list[int]) -> list[LesionResultRow]:
    """The predictions of the given jobs, in the order they were written."""
    if not job_ids:
        return []
    with database.session() as session:
        rows = session.execute(
            select(Prediction.job_id, Prediction.lesion_id, Prediction.label, Prediction.probabilities,
                   Prediction.roi_source).where(Prediction.job_id.in_(job_ids)).order_by(Prediction.id)
        ).all()
        return [LesionResultRow(job_id, lesion_id, label, dict(probabilities), roi_source)
                for job_id, lesion_id, label, probabilities, roi_source in rows]


# --- the worker's reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStudy:
    """A job's state with the identity of its study: what a task body checks before it acts."""

    job_id: int
    state: str
    study_id: int
    study_uid: str
    shadow: bool
    annotation_required: bool = False  # no centre-crop fallback: analysed only where an annotation says
    analysed_once: bool = False  # its analysis was recorded (a model is set): queued or running now means a resend

    @property
    def waits_for_analysis(self) -> bool:
        """Whether the analysis of this job is still to come (its send would be early)."""
        return self.state in (JobState.READY, JobState.QUEUED, JobState.RUNNING) and not self.analysed_once


def job_study(database: Database, job_id: int) -> JobStudy | None:
    """The job and its study, or None when there is no such job."""
    with database.session() as session:
        row = session.execute(select(Job.state, Job.study_id, Study.study_uid, Job.shadow, Job.annotation_required,
                                     Job.model)
                              .join(Study, Study.id == Job.study_id).where(Job.id == job_id)).one_or_none()
    if row is None:
        return None
    return JobStudy(job_id, row.state, row.study_id, row.study_uid, bool(row.shadow), bool(row.annotation_required),
                    row.model is not None)


def job_states(database: Database) -> list[str]:
    """The state of every job (a run waits until all are finished)."""
    with database.session() as session:
        return list(session.scalars(select(Job.state).order_by(Job.id)))


@dataclass(frozen=True)
class StudyJob:
    study_uid: str
    job_id: int
    state: str
    reason: str | None


def study_jobs(database: Database) -> list[StudyJob]:
    """Every job with its study's UID, in the order the studies arrived."""
    with database.session() as session:
        rows = session.execute(select(Study.study_uid, Job.id, Job.state, Job.reason)
                               .join(Job, Job.study_id == Study.id).order_by(Study.id, Job.id)).all()
    return [StudyJob(row.study_uid, row.id, row.state, row.reason) for row in rows]


def job_predictions(database: Database) -> list[Prediction]:
    """Every stored prediction, oldest first."""
    with database.session() as session:
        return list(session.scalars(select(Prediction).order_by(Prediction.id)))


def unpublished_outbox_count(database: Database) -> int:
    """Tasks written to the outbox and not yet handed to the broker (the metrics' queue depth)."""
    with database.session() as session:
        return int(session.scalar(select(func.count(OutboxEntry.id)).where(OutboxEntry.published_at.is_(None))) or 0)


def revision_spans(database: Database, study_ids: list[int]) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """(first instance of the current revision, completion) of each study: how long receiving took."""
    with database.session() as session:
        rows = session.execute(select(Study.revision_started_at, Study.completed_at)
                               .where(Study.id.in_(study_ids))).all()
    return [(row.revision_started_at, row.completed_at) for row in rows]
