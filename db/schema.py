"""The audit database schema (SQLAlchemy 2.0 typed declarative models).

Rows are written only by :mod:`db.repository`; everything else reads them. Times are stored as UTC
(naive in the column, aware in Python) so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from db.vocabulary import AssociationResult, CompletedBy, Severity

E = TypeVar("E", bound=StrEnum)

UID = String(64)
AE_TITLE = String(16)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in Python, naive UTC in the column (portable across backends)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class EnumText(TypeDecorator[E]):
    """A :class:`~enum.StrEnum` kept as its plain value in a ``VARCHAR`` column.

    The column is exactly the ``String(length)`` the migrations created (no database enum type,
    no constraint), so no migration is needed; what changes is that a value outside the enum
    fails on write, and reads come back as members.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_class = enum_class
        self.length = length

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON, dict[str, float]: JSON}


class Association(Base):
    """One DICOM association with a peer, accepted or rejected."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    calling_ae: Mapped[str] = mapped_column(AE_TITLE)
    called_ae: Mapped[str] = mapped_column(AE_TITLE)
    peer_name: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    port: Mapped[int | None]
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None]
    instances_stored: Mapped[int] = mapped_column(default=0)
    instances_failed: Mapped[int] = mapped_column(default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[AssociationResult] = mapped_column(EnumText(AssociationResult, 16), default=AssociationResult.OPEN)
    detail: Mapped[str | None] = mapped_column(Text)


class Study(Base):
    """A study as received; ``revision`` grows when instances arrive after completion."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_id: Mapped[str | None] = mapped_column(String(64))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[str | None] = mapped_column(String(8))
    # receiving | complete
    state: Mapped[str] = mapped_column(String(16), default="receiving")
    revision: Mapped[int] = mapped_column(default=1)
    calling_ae: Mapped[str | None] = mapped_column(AE_TITLE)
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revision_started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # When the quiet period after the last instance ends, and the hard cap of this revision.
    quiet_deadline: Mapped[dt.datetime] = mapped_column(default=utcnow)
    hard_deadline: Mapped[dt.datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[dt.datetime | None]
    completed_by: Mapped[CompletedBy | None] = mapped_column(EnumText(CompletedBy, 16))

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")

    __table_args__ = (Index("ix_studies_state_deadlines", "state", "quiet_deadline", "hard_deadline"),)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None]
    series_description: Mapped[str | None] = mapped_column(String(128))

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series", order_by="Instance.id")


class Instance(Base):
    """A stored SOP instance: where its bytes are and what they hash to."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    study_revision: Mapped[int] = mapped_column(default=1)
    times_received: Mapped[int] = mapped_column(default=1)
    association_id: Mapped[int | None] = mapped_column(ForeignKey("associations.id", ondelete="SET NULL"))

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """Analysis of one study revision; its ``state`` follows :mod:`db.states`."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    study_revision: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(80))
    attempts: Mapped[int] = mapped_column(default=0)
    shadow: Mapped[bool] = mapped_column(default=False, server_default=false())  # analyse and audit, send nothing
    # The sender requires a lesion annotation: no centre-crop fallback (decided when the study completed).
    annotation_required: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship()

    __table_args__ = (UniqueConstraint("study_id", "study_revision", name="uq_jobs_study_revision"),)


class Prediction(Base):
    """One lesion's result, written in the transaction that sets its job to analysed."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    lesion_id: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(80))
    label: Mapped[str] = mapped_column(String(32))  # a class, or "indeterminate"
    probabilities: Mapped[dict[str, float]]
    roi_source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "lesion_id", name="uq_predictions_job_lesion"),)


class OutboxEntry(Base):
    """A task to publish to the broker once the transaction that made it has committed.

    Publishing is claim, send, mark published (:mod:`db.repository.outbox`): the claim keeps two
    publishers (the node, a pool process, the sweeper) from handing the same row to the broker.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    task_name: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # A publisher claims a row before handing it to the broker: who (host:pid) and until when. The
    # claim is a lease, so a publisher that dies mid-publish delays the row only until it expires.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[dt.datetime | None]


class AuditEvent(Base):
    """Append-only trail of everything that happened (database triggers refuse UPDATE/DELETE).

    ``detail`` never holds patient names; UIDs and ids are kept so events can be joined.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(48), index=True)
    severity: Mapped[Severity] = mapped_column(EnumText(Severity, 8), default=Severity.INFO)
    study_uid: Mapped[str | None] = mapped_column(UID, index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    association_id: Mapped[int | None]
    job_id: Mapped[int | None] = mapped_column(index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any] | None]


class TruthLabel(Base):
    """Ground truth of one lesion (e.g. pathology), imported from ``labels.csv``."""

    __tablename__ = "truth_labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), index=True)
    study_uid: Mapped[str] = mapped_column(UID)
    accession_number: Mapped[str | None] = mapped_column(String(64))
    lesion_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(32))
    source: Mapped[str | None] = mapped_column(String(32))
    center_x_mm: Mapped[float | None]
    center_y_mm: Mapped[float | None]
    center_z_mm: Mapped[float | None]
    size_mm: Mapped[float | None]
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    import_file: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("study_uid", "lesion_id", name="uq_truth_labels_study_lesion"),)


class ReaderRead(Base):
    """One reader's call on one lesion, imported from ``reads.csv``."""

    __tablename__ = "reader_reads"

    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[str] = mapped_column(String(64))
    reader_group: Mapped[str] = mapped_column(String(32), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    lesion_id: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float | None]
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    import_file: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("reader_id", "study_uid", "lesion_id", name="uq_reader_reads_reader_lesion"),)
