"""The only writer of the audit database.

Every change of state goes through a method here, in its own transaction, together with the audit
event that explains it; so the trail and the state can never disagree. Readers use
:mod:`db.queries`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import String, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import Database
from db.records import LesionPrediction
from db.schema import (
    Association,
    AuditEvent,
    Instance,
    Job,
    OutboxEntry,
    Prediction,
    ReaderRead,
    Series,
    Study,
    TruthLabel,
    UTCDateTime,
    utcnow,
)
from db.states import JobState, StudyState, check_transition
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE, SEND_TASK



@dataclass(frozen=True)
class InstanceRecord:
    """What the node knows of an instance it has just written to the spool."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size_bytes: int
    sha256: str
    patient_id: str | None = None
    accession_number: str | None = None
    study_date: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    calling_ae: str | None = None
    association_id: int | None = None


@dataclass(frozen=True)
class RecordOutcome:
    study_id: int
    study_revision: int
    replaced: bool  # the SOP instance had been received before
    reopened: bool  # the study was complete and this instance started a new revision


@dataclass(frozen=True)
class CompletedStudy:
    study_id: int
    study_uid: str
    revision: int
    job_id: int
    completed_by: str


def _insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, so concurrent associations may create the same row."""
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    session.execute(module.insert(table).values(**values).on_conflict_do_nothing())


class UIDConflict(ValueError):
    """A UID that must be unique is already used by another study or series (bad sender data)."""


class DuplicateRows(ValueError):
    """An import would add rows whose keys are already in the database; nothing was written."""

    def __init__(self, keys: list[tuple[str, ...]]) -> None:
        super().__init__(f"{len(keys)} row(s) already imported")
        self.keys = keys


class _SlowPath(Exception):
    """The fast path met a case it does not handle (new study or series, re-sent instance)."""


class Repository:
    def __init__(self, database: Database) -> None:
        self.db = database
        dialect = postgresql if database.engine.dialect.name == "postgresql" else sqlite
        # Prepared once: the C-STORE path runs these for every instance of a study already known.
        self._series_of = (
            select(Series.id, Series.study_id, Study.study_uid).join(Study)
            .where(Series.series_uid == bindparam("p_series_uid"))
        )
        self._touch_study = (
            update(Study)
            .where(Study.id == bindparam("p_study_id"), Study.state == StudyState.RECEIVING.value)
            .values(last_received_at=bindparam("p_now", type_=UTCDateTime()),
                    quiet_deadline=bindparam("p_quiet_deadline", type_=UTCDateTime()),
                    calling_ae=func.coalesce(bindparam("p_calling_ae", type_=String()), Study.calling_ae))
            .returning(Study.revision)
        )
        self._insert_instance = (
            dialect.insert(Instance).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(Instance.id)
        )

    # --- audit ---------------------------------------------------------------------------------

    @staticmethod
    def _event(session: Session, kind: str, message: str = "", *, severity: str = "info", **fields: Any) -> None:
        session.add(AuditEvent(kind=kind, message=message, severity=severity, **fields))

    def audit(self, kind: str, message: str = "", *, severity: str = "info", **fields: Any) -> None:
        """Append one event (study_uid, sop_instance_uid, association_id, job_id, detail)."""
        with self.db.session() as session:
            self._event(session, kind, message, severity=severity, **fields)

    # --- associations --------------------------------------------------------------------------

    def open_association(
        self, *, calling_ae: str, called_ae: str, address: str, port: int | None, peer_name: str | None
    ) -> int:
        with self.db.session() as session:
            row = Association(
                calling_ae=calling_ae, called_ae=called_ae, address=address, port=port, peer_name=peer_name
            )
            session.add(row)
            session.flush()
            self._event(session, "association.accepted", f"from {calling_ae}", association_id=row.id,
                        detail={"calling_ae": calling_ae, "address": address, "peer": peer_name})
            return row.id

    def close_association(
        self, association_id: int, *, result: str, stored: int, failed: int, bytes_stored: int,
        detail: str | None = None,
    ) -> None:
        with self.db.session() as session:
            session.execute(
                update(Association).where(Association.id == association_id).values(
                    ended_at=utcnow(), result=result, instances_stored=stored, instances_failed=failed,
                    bytes_stored=bytes_stored, detail=detail,
                )
            )
            self._event(session, f"association.{result}", f"{stored} stored, {failed} refused",
                        severity="info" if result == "released" and not failed else "warning",
                        association_id=association_id,
                        detail={"stored": stored, "failed": failed, "bytes": bytes_stored})

    def reject_association(
        self, *, calling_ae: str, called_ae: str, address: str, port: int | None, reason: str
    ) -> int:
        with self.db.session() as session:
            now = utcnow()
            row = Association(calling_ae=calling_ae, called_ae=called_ae, address=address, port=port,
                              started_at=now, ended_at=now, result="rejected", detail=reason)
            session.add(row)
            session.flush()
            self._event(session, "association.rejected", reason, severity="warning", association_id=row.id,
                        detail={"calling_ae": calling_ae, "address": address})
            return row.id

    def close_interrupted_associations(self) -> int:
        """At start-up: associations left open by a crash are marked interrupted."""
        with self.db.session() as session:
            ids = session.scalars(select(Association.id).where(Association.result == "open")).all()
            for association_id in ids:
                session.execute(update(Association).where(Association.id == association_id)
                                .values(result="interrupted", ended_at=utcnow()))
                self._event(session, "association.interrupted", "node stopped during the association",
                            severity="warning", association_id=association_id)
            return len(ids)

    # --- instances -----------------------------------------------------------------------------

    def record_instance(
        self, record: InstanceRecord, *, quiet_period_s: float, hard_cap_s: float, event: str | None = None
    ) -> RecordOutcome:
        """Record a stored instance and push back its study's completion deadline.

        A study that was complete is reopened as a new revision. A re-sent SOP instance keeps one
        row (its hash, path and time updated, ``times_received`` counted up) and is audited.
        Two associations inserting the same new instance at once collide on its unique key; the
        loser simply runs again and finds the row.
        """
        if event is None:
            try:
                return self._record_known_study(record, quiet_period_s)
            except _SlowPath:
                pass
        for attempt in range(3):
            try:
                return self._record_instance(record, quiet_period_s, hard_cap_s, event)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _record_known_study(self, record: InstanceRecord, quiet_period_s: float) -> RecordOutcome:
        """The common case in three statements: a new instance of a known series of a study
        still receiving. Anything else raises _SlowPath, rolling back, for the full path."""
        now = utcnow()
        with self.db.engine.begin() as conn:
            found = conn.execute(self._series_of, {"p_series_uid": record.series_uid}).first()
            if found is None or found.study_uid != record.study_uid:
                raise _SlowPath
            revision = conn.execute(self._touch_study, {
                "p_study_id": found.study_id, "p_now": now, "p_calling_ae": record.calling_ae,
                "p_quiet_deadline": now + dt.timedelta(seconds=quiet_period_s),
            }).scalar()
            if revision is None:
                raise _SlowPath  # complete: this instance reopens the study
            inserted = conn.execute(self._insert_instance, {
                "series_id": found.id, "sop_instance_uid": record.sop_instance_uid,
                "sop_class_uid": record.sop_class_uid, "transfer_syntax_uid": record.transfer_syntax_uid,
                "path": record.path, "size_bytes": record.size_bytes, "sha256": record.sha256,
                "received_at": now, "study_revision": revision, "times_received": 1,
                "association_id": record.association_id,
            }).first()
            if inserted is None:
                raise _SlowPath  # re-sent instance: replaced and audited by the full path
        return RecordOutcome(found.study_id, revision, replaced=False, reopened=False)

    def _record_instance(
        self, record: InstanceRecord, quiet_period_s: float, hard_cap_s: float, event: str | None
    ) -> RecordOutcome:
        now = utcnow()
        with self.db.session() as session:
            _insert_ignore(session, Study.__table__, {
                "study_uid": record.study_uid, "patient_id": record.patient_id,
                "accession_number": record.accession_number, "study_date": record.study_date,
                "calling_ae": record.calling_ae, "state": StudyState.RECEIVING.value, "revision": 1,
                "first_received_at": now, "revision_started_at": now, "last_received_at": now,
                "quiet_deadline": now, "hard_deadline": now + dt.timedelta(seconds=hard_cap_s),
            })
            study = session.scalars(
                select(Study).where(Study.study_uid == record.study_uid).with_for_update()
            ).one()
            reopened = study.state == StudyState.COMPLETE.value
            if reopened:
                study.revision += 1
                study.state = StudyState.RECEIVING.value
                study.revision_started_at = now
                study.hard_deadline = now + dt.timedelta(seconds=hard_cap_s)
                study.completed_at = None
                study.completed_by = None
                self._event(session, "study.reopened", f"revision {study.revision}", severity="warning",
                            study_uid=record.study_uid, sop_instance_uid=record.sop_instance_uid,
                            association_id=record.association_id, detail={"revision": study.revision})
            study.last_received_at = now
            study.quiet_deadline = now + dt.timedelta(seconds=quiet_period_s)
            if record.calling_ae:
                study.calling_ae = record.calling_ae

            _insert_ignore(session, Series.__table__, {
                "study_id": study.id, "series_uid": record.series_uid, "modality": record.modality,
                "series_number": record.series_number,
                "series_description": (record.series_description or None) and record.series_description[:128],
            })
            series_id, owner = session.execute(
                select(Series.id, Series.study_id).where(Series.series_uid == record.series_uid)).one()
            if owner != study.id:
                raise UIDConflict("Series Instance UID already belongs to another study")

            existing = session.scalars(
                select(Instance).where(Instance.sop_instance_uid == record.sop_instance_uid).with_for_update()
            ).one_or_none()
            values = {
                "series_id": series_id, "sop_class_uid": record.sop_class_uid,
                "transfer_syntax_uid": record.transfer_syntax_uid, "path": record.path,
                "size_bytes": record.size_bytes, "sha256": record.sha256, "received_at": now,
                "study_revision": study.revision, "association_id": record.association_id,
            }
            if existing is None:
                session.add(Instance(sop_instance_uid=record.sop_instance_uid, **values))
            else:
                same = existing.sha256 == record.sha256
                for key, value in values.items():
                    setattr(existing, key, value)
                existing.times_received += 1
                self._event(session, "instance.replaced",
                            "re-sent, identical bytes" if same else "re-sent with different content",
                            severity="info" if same else "warning", study_uid=record.study_uid,
                            sop_instance_uid=record.sop_instance_uid, association_id=record.association_id,
                            detail={"times_received": existing.times_received, "identical": same})
            if event:
                self._event(session, event, study_uid=record.study_uid,
                            sop_instance_uid=record.sop_instance_uid, association_id=record.association_id)
            return RecordOutcome(study.id, study.revision, existing is not None, reopened)

    def recorded_paths(self, study_uid: str) -> set[str]:
        """Spool paths recorded for one study (start-up reconciliation)."""
        with self.db.session() as session:
            return set(session.scalars(
                select(Instance.path).join(Series).join(Study).where(Study.study_uid == study_uid)
            ))

    # --- study completion ----------------------------------------------------------------------

    def complete_due_studies(self, now: dt.datetime | None = None, *,
                             shadow_for: Callable[[str | None], bool] | None = None) -> list[CompletedStudy]:
        """Complete every receiving study whose quiet period or hard cap has passed.

        ``shadow_for(calling AE)`` says whether studies from that sender are shadow runs.
        """
        now = now or utcnow()
        with self.db.session() as session:
            due = session.execute(
                select(Study.id, Study.revision, Study.quiet_deadline, Study.hard_deadline,
                       Study.calling_ae).where(
                    Study.state == StudyState.RECEIVING.value,
                    (Study.quiet_deadline <= now) | (Study.hard_deadline <= now),
                )
            ).all()
        done: list[CompletedStudy] = []
        for study_id, revision, quiet_deadline, hard_deadline, calling_ae in due:
            by = "quiet" if quiet_deadline <= now else "cap"
            shadow = bool(shadow_for(calling_ae)) if shadow_for else False
            completed = self._complete(study_id, revision, by, shadow=shadow)
            if completed:
                done.append(completed)
        return done

    def complete_study(self, study_uid: str, *, by: str = "manual", queue: str = ARRIVAL_QUEUE,
                       shadow: bool = False) -> CompletedStudy | None:
        """Force completion (``triphase studies complete``); None if already complete."""
        with self.db.session() as session:
            row = session.execute(select(Study.id, Study.revision, Study.state)
                                  .where(Study.study_uid == study_uid)).one_or_none()
        if row is None:
            raise LookupError("no such study")
        if row.state == StudyState.COMPLETE.value:
            return None
        return self._complete(row.id, row.revision, by, queue, shadow=shadow)

    def _complete(self, study_id: int, revision: int, by: str, queue: str = ARRIVAL_QUEUE, *,
                  shadow: bool = False) -> CompletedStudy | None:
        """Complete one revision; the conditional UPDATE makes this safe with several nodes."""
        with self.db.session() as session:
            now = utcnow()
            changed = session.execute(
                update(Study)
                .where(Study.id == study_id, Study.revision == revision,
                       Study.state == StudyState.RECEIVING.value)
                .values(state=StudyState.COMPLETE.value, completed_at=now, completed_by=by)
            ).rowcount
            if changed != 1:
                return None
            study_uid = session.scalars(select(Study.study_uid).where(Study.id == study_id)).one()
            job = Job(study_id=study_id, study_revision=revision, state=JobState.READY.value, shadow=shadow)
            session.add(job)
            session.flush()
            session.add(OutboxEntry(job_id=job.id, task_name=ANALYSE_TASK, queue=queue))
            counts = session.execute(
                select(func.count(func.distinct(Series.id)), func.count(Instance.id))
                .select_from(Series).join(Instance, isouter=True).where(Series.study_id == study_id)
            ).one()
            self._event(session, "study.complete", f"by {by}: {counts[0]} series, {counts[1]} instances",
                        study_uid=study_uid, job_id=job.id,
                        detail={"revision": revision, "by": by, "series": counts[0], "instances": counts[1]})
            self._event(session, "job.ready", "waiting to be published" + (" (shadow run)" if shadow else ""),
                        study_uid=study_uid, job_id=job.id, detail={"shadow": shadow, "queue": queue})
            return CompletedStudy(study_id, study_uid, revision, job.id, by)

    # --- jobs and the outbox -------------------------------------------------------------------

    def transition_job(self, job_id: int, target: JobState | str, *, reason: str | None = None,
                       **detail: Any) -> None:
        """Move a job along the state machine (:mod:`db.states`), with its audit event."""
        with self.db.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise LookupError(f"no job {job_id}")
            new = check_transition(job.state, target)
            old = job.state
            job.state = new.value
            job.updated_at = utcnow()
            if reason is not None:
                job.reason = reason
            study_uid = session.scalars(select(Study.study_uid).where(Study.id == job.study_id)).one()
            self._event(session, f"job.{new.value}", reason or f"{old} -> {new.value}",
                        severity="error" if new is JobState.FAILED else "info",
                        study_uid=study_uid, job_id=job_id, detail={"from": old, **detail} or None)

    def record_analysis(self, job_id: int, *, task: str, model: str, lesions: Sequence[LesionPrediction],
                        detail: dict[str, Any] | None = None, enqueue_send: bool = False) -> None:
        """Predictions of every lesion and the job's move to analysed, in one transaction.

        Re-running an analysis (a redelivered task) replaces the job's predictions: one row per
        lesion, never two.
        """
        with self.db.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise LookupError(f"no job {job_id}")
            new = check_transition(job.state, JobState.ANALYSED)
            session.execute(delete(Prediction).where(Prediction.job_id == job_id))
            for lesion in lesions:
                session.add(Prediction(job_id=job_id, lesion_id=lesion.lesion_id, task=task, model=model,
                                       label=lesion.label, probabilities=dict(lesion.probabilities),
                                       roi_source=lesion.roi_source))
            old, job.state, job.task, job.model, job.updated_at = job.state, new.value, task, model, utcnow()
            job.reason = None
            study_uid = session.scalars(select(Study.study_uid).where(Study.id == job.study_id)).one()
            self._event(session, "job.analysed", f"{len(lesions)} lesion(s) with model {model[:12]}",
                        study_uid=study_uid, job_id=job_id, detail={"from": old, **(detail or {})})
            if enqueue_send:
                session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))

    def requeue_send(self, job_id: int) -> None:
        """``triphase resend``: a sent or failed job's send step goes back to the queue."""
        with self.db.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise LookupError(f"no job {job_id}")
            if job.state not in (JobState.SENT.value, JobState.FAILED.value, JobState.ANALYSED.value):
                raise ValueError(f"job {job_id} is {job.state}; only a sent, failed or analysed job can be resent")
            old = job.state
            job.state = check_transition(job.state, JobState.QUEUED).value
            job.updated_at = utcnow()
            session.add(OutboxEntry(job_id=job_id, task_name=SEND_TASK, queue=ARRIVAL_QUEUE))
            study_uid = session.scalars(select(Study.study_uid).where(Study.id == job.study_id)).one()
            self._event(session, "job.resend", f"{old} -> queued for sending again", study_uid=study_uid,
                        job_id=job_id, detail={"from": old})

    def unpublished_outbox(self, limit: int = 100) -> list[tuple[int, int, str, str]]:
        """(outbox id, job id, task name, queue) not yet handed to the broker, oldest first."""
        with self.db.session() as session:
            rows = session.execute(
                select(OutboxEntry.id, OutboxEntry.job_id, OutboxEntry.task_name, OutboxEntry.queue)
                .where(OutboxEntry.published_at.is_(None)).order_by(OutboxEntry.id).limit(limit)
            ).all()
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def mark_published(self, outbox_id: int) -> None:
        with self.db.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == outbox_id)
                            .values(published_at=utcnow(), attempts=OutboxEntry.attempts + 1))

    def mark_publish_failed(self, outbox_id: int, error: str) -> None:
        with self.db.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == outbox_id)
                            .values(attempts=OutboxEntry.attempts + 1, last_error=error[:2000]))

    # --- ground truth and readers' reads (evaluation) ---------------------------------------------

    def import_truth(self, rows: list[dict[str, Any]], *, file: str, replace: bool = False) -> int:
        """Add ground-truth lesions, all or nothing, with one audit event.

        Keys (study_uid, lesion_id) already present raise :class:`DuplicateRows` listing them,
        unless ``replace``: then the old rows are replaced and the event says how many.
        """
        return self._import(TruthLabel, ("study_uid", "lesion_id"), rows, file=file, replace=replace,
                            kind="truth.imported")

    def import_reads(self, rows: list[dict[str, Any]], *, file: str, replace: bool = False) -> int:
        """Add readers' reads, all or nothing; keys are (reader_id, study_uid, lesion_id)."""
        return self._import(ReaderRead, ("reader_id", "study_uid", "lesion_id"), rows, file=file,
                            replace=replace, kind="reads.imported")

    def _import(self, model: type[TruthLabel] | type[ReaderRead], key: tuple[str, ...],
                rows: list[dict[str, Any]], *, file: str, replace: bool, kind: str) -> int:
        columns = [getattr(model, name) for name in key]
        wanted = {tuple(row[name] for name in key) for row in rows}
        with self.db.session() as session:
            study_uids = sorted({row["study_uid"] for row in rows})
            existing: dict[tuple[str, ...], int] = {}
            for start in range(0, len(study_uids), 500):  # bounded IN lists on every backend
                chunk = study_uids[start:start + 500]
                for row in session.execute(select(model.id, *columns).where(model.study_uid.in_(chunk))):
                    existing[tuple(row[1:])] = row[0]
            clashes = sorted(k for k in wanted if k in existing)
            if clashes and not replace:
                raise DuplicateRows(clashes)
            for start in range(0, len(clashes), 500):
                ids = [existing[k] for k in clashes[start:start + 500]]
                session.execute(delete(model).where(model.id.in_(ids)))
            now = utcnow()
            session.add_all(model(**row, imported_at=now, import_file=file) for row in rows)
            self._event(session, kind, f"{len(rows)} row(s) from {Path(file).name}"
                        + (f", {len(clashes)} replaced" if clashes else ""),
                        detail={"file": file, "rows": len(rows), "replaced": len(clashes),
                                "studies": len(study_uids)})
            return len(rows)
