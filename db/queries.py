"""Read-only views of the audit database for the command line and the worker."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TypedDict

from sqlalchemy import func, select

from db.engine import Database
from db.schema import AuditEvent, Instance, Job, Prediction, ReaderRead, Series, Study, TruthLabel
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
