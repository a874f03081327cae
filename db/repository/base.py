"""What every part of the repository shares: the database, the audit event, and row lookups.

An audit event is always added in the session of the change it explains, so the trail and the
state commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.engine import Database
from db.schema import AuditEvent, Job, Study, utcnow
from db.states import JobState, check_transition
from db.vocabulary import Severity


def add_event(session: Session, kind: str, message: str = "", *, severity: Severity = Severity.INFO,
              study_uid: str | None = None, sop_instance_uid: str | None = None, association_id: int | None = None,
              job_id: int | None = None, detail: Mapping[str, object] | None = None) -> None:
    """Add one audit event to ``session`` (committed with whatever else the session writes)."""
    session.add(AuditEvent(kind=kind, message=message, severity=severity, study_uid=study_uid,
                           sop_instance_uid=sop_instance_uid, association_id=association_id, job_id=job_id,
                           detail=None if detail is None else dict(detail)))


def insert_ignore(session: Session, table: Table, values: Mapping[str, object]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, so concurrent associations may create the same row."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(table).values(**values).on_conflict_do_nothing())


def locked_job(session: Session, job_id: int) -> Job:
    """The job row, locked until the session ends; LookupError if there is none."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise LookupError(f"no job {job_id}")
    return job


def compare_and_set_job(session: Session, job_id: int, expected: JobState, target: JobState,
                        values: Mapping[str, object] | None = None) -> int | None:
    """``UPDATE jobs SET state = target WHERE id = :id AND state = :expected``: the job's study id
    when this session moved the job, None when it was not in ``expected`` (another process moved it).

    Only the row's own state decides, read by the database as it writes: two processes that act on
    one job at once (a redelivered task, a duplicate publish) cannot both move it, and neither can
    move it from a state it never saw.
    """
    check_transition(expected, target)
    changed = session.execute(
        update(Job).where(Job.id == job_id, Job.state == expected.value)
        .values(state=target.value, updated_at=utcnow(), **(values or {}))
        .returning(Job.study_id)
    ).first()
    return None if changed is None else int(changed.study_id)


def study_uid_of(session: Session, study_id: int) -> str:
    """The Study Instance UID of a study row (audit events name studies by UID)."""
    return session.scalars(select(Study.study_uid).where(Study.id == study_id)).one()


class RepositoryBase:
    """The database every part of the repository writes to, and the stand-alone audit event."""

    def __init__(self, database: Database) -> None:
        self.db = database

    def audit(self, kind: str, message: str = "", *, severity: Severity = Severity.INFO,
              study_uid: str | None = None, sop_instance_uid: str | None = None,
              association_id: int | None = None, job_id: int | None = None,
              detail: Mapping[str, object] | None = None) -> None:
        """Append one event that goes with no change of state (a refusal, an import problem)."""
        with self.db.session() as session:
            add_event(session, kind, message, severity=severity, study_uid=study_uid,
                      sop_instance_uid=sop_instance_uid, association_id=association_id, job_id=job_id,
                      detail=detail)
