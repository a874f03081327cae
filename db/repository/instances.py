"""Stored instances: the study, series and instance rows behind every C-STORE success.

Most instances belong to a series already known of a study still receiving; they take a prepared
three-statement fast path, whose rows from concurrent associations share one commit
(:mod:`db.group_commit`). Everything else (a new study or series, a re-sent instance, a study
that completed and is reopened) takes the full path, which locks the study row.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Integer, Select, String, Table, bindparam, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.engine import Database
from db.group_commit import GroupCommit
from db.repository.base import RepositoryBase, add_event, insert_ignore
from db.repository.prepared import PreparedStatement
from db.schema import Instance, Series, Study, UTCDateTime, utcnow
from db.states import StudyState
from db.vocabulary import Severity


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
    superseded_path: str | None = None  # a re-send moved the instance: its old file, to remove


class UIDConflict(ValueError):
    """A UID that must be unique is already used by another study or series (bad sender data)."""


@dataclass(frozen=True)
class _KnownStudyItem:
    """A record for the fast path, with its study's quiet period."""

    record: InstanceRecord
    quiet_period_s: float


class _KnownStudyStatements:
    """The fast path's statements, prepared once: the C-STORE path runs them for every instance."""

    def __init__(self, database: Database) -> None:
        dialect = postgresql if database.engine.dialect.name == "postgresql" else sqlite
        self.series_of = (
            select(Series.id, Series.study_id, Study.study_uid).join(Study)
            .where(Series.series_uid == bindparam("p_series_uid"))
        )
        self.touch_study = (
            update(Study)
            .where(Study.id == bindparam("p_study_id"), Study.state == StudyState.RECEIVING.value)
            .values(last_received_at=bindparam("p_now", type_=UTCDateTime()),
                    quiet_deadline=bindparam("p_quiet_deadline", type_=UTCDateTime()),
                    calling_ae=func.coalesce(bindparam("p_calling_ae", type_=String()), Study.calling_ae))
            .returning(Study.revision)
        )
        self.insert_instance = (
            dialect.insert(Instance).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(Instance.id)
        )
        engine = database.engine
        self.prepared_series_of = PreparedStatement(self.series_of, engine)
        self.prepared_touch_study = PreparedStatement(self.touch_study, engine)
        self.prepared_insert_instance = PreparedStatement(self.insert_instance, engine, INSTANCE_KEYS)
        # PostgreSQL runs the three as one statement: one round trip to the server per row, not three.
        self.prepared_known_row = (PreparedStatement(_known_row_statement(), engine)
                                   if database.engine.dialect.name == "postgresql" else None)


def _known_row_statement() -> Select[tuple[int, int, str, int | None, int | None]]:
    """The fast path's three statements as one, for PostgreSQL (whose data-modifying ``WITH``
    clauses run once each, to completion, within the one statement).

    Its row: the series' id, its study's id and UID, the study's revision if it was touched (the
    study is the record's and still receiving) and the new instance's id if it was inserted (not a
    re-sent instance); no row for an unknown series. As with the three statements, nothing is
    written unless the study is the record's and receiving, and a re-sent instance leaves the study
    touched and the instance for the full path.
    """
    found = (select(Series.id.label("series_id"), Series.study_id, Study.study_uid).join(Study)
             .where(Series.series_uid == bindparam("p_series_uid")).cte("found"))
    touched = (
        update(Study)
        .where(Study.id == found.c.study_id, found.c.study_uid == bindparam("p_study_uid"),
               Study.state == StudyState.RECEIVING.value)
        .values(last_received_at=bindparam("p_now", type_=UTCDateTime()),
                quiet_deadline=bindparam("p_quiet_deadline", type_=UTCDateTime()),
                calling_ae=func.coalesce(bindparam("p_calling_ae", type_=String()), Study.calling_ae))
        .returning(Study.revision)
        .cte("touched")
    )
    columns = Instance.__table__.c
    given = [name for name in INSTANCE_KEYS if name not in _FROM_THE_STATEMENT]
    values = select(*(bindparam(f"i_{name}", type_=columns[name].type) for name in given),
                    found.c.series_id, touched.c.revision, literal(1, Integer()),
                    bindparam("p_now", type_=UTCDateTime()))
    inserted = (
        postgresql.insert(Instance)
        .from_select([*given, *_FROM_THE_STATEMENT], values)
        .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
        .returning(Instance.id)
        .cte("inserted")
    )
    return select(found.c.series_id, found.c.study_id, found.c.study_uid,
                  select(touched.c.revision).scalar_subquery(), select(inserted.c.id).scalar_subquery())


# The new instance's columns that the one statement fills itself, in the order it selects them.
_FROM_THE_STATEMENT = ("series_id", "study_revision", "times_received", "received_at")


INSTANCE_KEYS = ("sop_instance_uid", "times_received", "series_id", "sop_class_uid", "transfer_syntax_uid", "path",
                 "size_bytes", "sha256", "received_at", "study_revision", "association_id")
"""The columns the fast path's insert sets (``_instance_values`` and the two before them)."""


def _record_columns(record: InstanceRecord) -> dict[str, object]:
    """The columns of an instance row that come from the record alone."""
    return {
        "sop_class_uid": record.sop_class_uid, "transfer_syntax_uid": record.transfer_syntax_uid,
        "path": record.path, "size_bytes": record.size_bytes, "sha256": record.sha256,
        "association_id": record.association_id,
    }


def _instance_values(record: InstanceRecord, series_id: int, revision: int, now: dt.datetime) -> dict[str, object]:
    """The columns an instance row takes from a record (new row, or a re-sent instance's update)."""
    return _record_columns(record) | {"series_id": series_id, "received_at": now, "study_revision": revision}


def _known_row(statement: PreparedStatement, conn: object, item: _KnownStudyItem,
               now: dt.datetime) -> RecordOutcome | None:
    """The fast path in one statement (:func:`_known_row_statement`)."""
    record = item.record
    given = _record_columns(record) | {"sop_instance_uid": record.sop_instance_uid}
    row = statement.first(conn, {
        "p_series_uid": record.series_uid, "p_study_uid": record.study_uid, "p_now": now,
        "p_quiet_deadline": now + dt.timedelta(seconds=item.quiet_period_s), "p_calling_ae": record.calling_ae,
        **{f"i_{name}": value for name, value in given.items()},
    })
    if row is None:
        return None  # a new series: the full path
    _series_id, study_id, _study_uid, revision, inserted = row
    if revision is None or inserted is None:
        return None  # another study's series, a study no longer receiving, or a re-sent instance
    return RecordOutcome(study_id, int(revision), replaced=False, reopened=False)


def _locked_study(session: Session, record: InstanceRecord, now: dt.datetime, hard_cap_s: float) -> Study:
    """The record's study row, created if new, locked until the session ends."""
    insert_ignore(session, _table(Study), {
        "study_uid": record.study_uid, "patient_id": record.patient_id,
        "accession_number": record.accession_number, "study_date": record.study_date,
        "calling_ae": record.calling_ae, "state": StudyState.RECEIVING.value, "revision": 1,
        "first_received_at": now, "revision_started_at": now, "last_received_at": now,
        "quiet_deadline": now, "hard_deadline": now + dt.timedelta(seconds=hard_cap_s),
    })
    return session.scalars(select(Study).where(Study.study_uid == record.study_uid).with_for_update()).one()


def _reopen(session: Session, study: Study, record: InstanceRecord, now: dt.datetime, hard_cap_s: float) -> None:
    """A complete study received another instance: a new revision starts, with a new hard cap."""
    study.revision += 1
    study.state = StudyState.RECEIVING.value
    study.revision_started_at = now
    study.hard_deadline = now + dt.timedelta(seconds=hard_cap_s)
    study.completed_at = None
    study.completed_by = None
    add_event(session, "study.reopened", f"revision {study.revision}", severity=Severity.WARNING,
              study_uid=record.study_uid, sop_instance_uid=record.sop_instance_uid,
              association_id=record.association_id, detail={"revision": study.revision})


def _series_id(session: Session, study: Study, record: InstanceRecord) -> int:
    """The record's series row (created if new); UIDConflict if another study owns its UID."""
    insert_ignore(session, _table(Series), {
        "study_id": study.id, "series_uid": record.series_uid, "modality": record.modality,
        "series_number": record.series_number,
        "series_description": (record.series_description or None) and record.series_description[:128],
    })
    series_id, owner = session.execute(
        select(Series.id, Series.study_id).where(Series.series_uid == record.series_uid)).one()
    if owner != study.id:
        raise UIDConflict("Series Instance UID already belongs to another study")
    return int(series_id)


@dataclass(frozen=True)
class _Put:
    replaced: bool
    superseded_path: str | None = None


def _put_instance(session: Session, record: InstanceRecord, values: dict[str, object]) -> _Put:
    """Add the instance row, or update a re-sent one (counted and audited)."""
    existing = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == record.sop_instance_uid).with_for_update()
    ).one_or_none()
    if existing is None:
        session.add(Instance(sop_instance_uid=record.sop_instance_uid, **values))
        return _Put(replaced=False)
    superseded = existing.path if existing.path != record.path else None
    if superseded is not None:
        _audit_move(session, existing, record)
    same = existing.sha256 == record.sha256
    for key, value in values.items():
        setattr(existing, key, value)
    existing.times_received += 1
    add_event(session, "instance.replaced", "re-sent, identical bytes" if same else "re-sent with different content",
              severity=Severity.INFO if same else Severity.WARNING, study_uid=record.study_uid,
              sop_instance_uid=record.sop_instance_uid, association_id=record.association_id,
              detail={"times_received": existing.times_received, "identical": same})
    return _Put(replaced=True, superseded_path=superseded)


def _audit_move(session: Session, existing: Instance, record: InstanceRecord) -> None:
    """A re-send put the instance in another study or series: both places go in the trail."""
    old_study, old_series = session.execute(
        select(Study.study_uid, Series.series_uid).join(Series).where(Series.id == existing.series_id)).one()
    add_event(session, "instance.moved", f"from study {old_study} series {old_series}",
              severity=Severity.WARNING, study_uid=record.study_uid, sop_instance_uid=record.sop_instance_uid,
              association_id=record.association_id,
              detail={"old_study_uid": old_study, "old_series_uid": old_series, "old_path": existing.path,
                      "new_study_uid": record.study_uid, "new_series_uid": record.series_uid,
                      "new_path": record.path})


def _table(model: type[Study] | type[Series]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


class InstanceWrites(RepositoryBase):
    def __init__(self, database: Database) -> None:
        super().__init__(database)
        self._known_study = _KnownStudyStatements(database)
        # Concurrent associations' rows share a commit; each success still waits for its own row.
        self._known_study_writes = GroupCommit(self._write_known_study)

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
            known = self._known_study_writes.run(_KnownStudyItem(record, quiet_period_s))
            if known is not None:
                return known
        for attempt in range(3):
            try:
                return self._record_instance(record, quiet_period_s, hard_cap_s, event)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write_known_study(self, items: Sequence[_KnownStudyItem]) -> list[RecordOutcome | None]:
        """The common case, for one record or a group (:mod:`db.group_commit`): a new instance of a
        known series of a study still receiving, in three statements each, one commit for all.

        None for a record the full path must write (new study or series, complete study, re-sent
        instance). Such a record changed nothing here but, for a re-sent instance, its study's
        arrival time, which the full path sets again; so the group's other rows are kept."""
        now = utcnow()
        # In the order of their studies' UIDs: two processes' groups then never lock two study rows
        # in opposite orders (PostgreSQL would end such a deadlock after a second, failing a group).
        order = sorted(range(len(items)), key=lambda index: items[index].record.study_uid)
        outcomes: list[RecordOutcome | None] = [None] * len(items)
        transaction = self.db.driver_transaction() if self.db.has_driver_transaction else self.db.begin()
        with transaction as conn:
            for index in order:
                outcomes[index] = self._known_study_rows(conn, items[index], now)
        return outcomes

    def _known_study_rows(self, conn: Connection | sqlite3.Connection, item: _KnownStudyItem,
                          now: dt.datetime) -> RecordOutcome | None:
        statements, record = self._known_study, item.record
        if statements.prepared_known_row is not None:
            return _known_row(statements.prepared_known_row, conn, item, now)
        found = statements.prepared_series_of.first(conn, {"p_series_uid": record.series_uid})
        if found is None:
            return None
        series_id, study_id, study_uid = found
        if study_uid != record.study_uid:
            return None
        touched = statements.prepared_touch_study.first(conn, {
            "p_study_id": study_id, "p_now": now, "p_calling_ae": record.calling_ae,
            "p_quiet_deadline": now + dt.timedelta(seconds=item.quiet_period_s),
        })
        if touched is None:
            return None  # complete: this instance reopens the study
        revision = int(touched[0])
        inserted = statements.prepared_insert_instance.first(conn, {
            "sop_instance_uid": record.sop_instance_uid, "times_received": 1,
            **_instance_values(record, series_id, revision, now),
        })
        if inserted is None:
            return None  # re-sent instance: replaced and audited by the full path
        return RecordOutcome(study_id, revision, replaced=False, reopened=False)

    def _record_instance(
        self, record: InstanceRecord, quiet_period_s: float, hard_cap_s: float, event: str | None
    ) -> RecordOutcome:
        now = utcnow()
        with self.db.session() as session:
            study = _locked_study(session, record, now, hard_cap_s)
            reopened = study.state == StudyState.COMPLETE.value
            if reopened:
                _reopen(session, study, record, now, hard_cap_s)
            study.last_received_at = now
            study.quiet_deadline = now + dt.timedelta(seconds=quiet_period_s)
            if record.calling_ae:
                study.calling_ae = record.calling_ae
            series_id = _series_id(session, study, record)
            put = _put_instance(session, record, _instance_values(record, series_id, study.revision, now))
            if event:
                add_event(session, event, study_uid=record.study_uid, sop_instance_uid=record.sop_instance_uid,
                          association_id=record.association_id)
            return RecordOutcome(study.id, study.revision, put.replaced, reopened, put.superseded_path)

    def instance_path(self, sop_instance_uid: str) -> str | None:
        """Where the row of a SOP instance says its file is; None if it has no row."""
        with self.db.session() as session:
            return session.scalars(
                select(Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)).one_or_none()

    def recorded_paths(self, study_uid: str) -> set[str]:
        """Spool paths recorded for one study (start-up reconciliation)."""
        with self.db.session() as session:
            return set(session.scalars(
                select(Instance.path).join(Series).join(Study).where(Study.study_uid == study_uid)
            ))
