"""Read-only views of the audit database for the command line and the worker."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from db.engine import Database
from db.schema import AuditEvent, Instance, Job, Prediction, ReaderRead, Series, Study, TruthLabel


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
    completed_by: str | None
    latest_job_id: int | None
    latest_job_state: str | None

    def as_json(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in asdict(self).items()}


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
        return dict(rows)  # type: ignore[arg-type]


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
    probabilities: dict[str, Any]
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


def job_outcomes(database: Database, *, states: tuple[str, ...] = ("skipped", "failed"),
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
        return [tuple(row) for row in session.execute(query)]  # type: ignore[misc]


# --- the worker's reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStudy:
    """A job's state with the identity of its study: what a task body checks before it acts."""

    job_id: int
    state: str
    study_id: int
    study_uid: str
    shadow: bool


def job_study(database: Database, job_id: int) -> JobStudy | None:
    """The job and its study, or None when there is no such job."""
    with database.session() as session:
        row = session.execute(select(Job.state, Job.study_id, Study.study_uid, Job.shadow)
                              .join(Study, Study.id == Job.study_id).where(Job.id == job_id)).one_or_none()
    if row is None:
        return None
    return JobStudy(job_id, row.state, row.study_id, row.study_uid, bool(row.shadow))


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
