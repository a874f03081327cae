"""Ground truth and readers' reads for evaluation: imported all or nothing, one audit event each.

The rows arrive validated (``triphase truth import`` / ``reads import`` check every line first);
here they are only written, after checking that none of their keys is already present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypedDict, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from db.repository.base import RepositoryBase, add_event
from db.schema import ReaderRead, TruthLabel, utcnow

_CHUNK = 500  # bounded IN lists on every backend


class TruthRow(TypedDict):
    """One line of ``labels.csv``, checked, with its study UID resolved."""

    patient_id: str
    study_uid: str
    accession_number: str | None
    lesion_id: str
    label: str
    source: str | None
    center_x_mm: float | None
    center_y_mm: float | None
    center_z_mm: float | None
    size_mm: float | None


class ReadRow(TypedDict):
    """One line of ``reads.csv``, checked."""

    reader_id: str
    reader_group: str
    patient_id: str
    study_uid: str
    lesion_id: str
    label: str
    confidence: float | None


class DuplicateRows(ValueError):
    """An import would add rows whose keys are already in the database; nothing was written."""

    def __init__(self, keys: list[tuple[str, ...]]) -> None:
        super().__init__(f"{len(keys)} row(s) already imported")
        self.keys = keys


R = TypeVar("R", TruthRow, ReadRow)


@dataclass(frozen=True)
class _Import(Generic[R]):
    """How one kind of file is keyed and where it goes."""

    model: type[TruthLabel] | type[ReaderRead]
    key_columns: tuple[InstrumentedAttribute[str], ...]
    key: Callable[[R], tuple[str, ...]]
    event_kind: str


_TRUTH: _Import[TruthRow] = _Import(TruthLabel, (TruthLabel.study_uid, TruthLabel.lesion_id),
                                    lambda row: (row["study_uid"], row["lesion_id"]), "truth.imported")
_READS: _Import[ReadRow] = _Import(ReaderRead, (ReaderRead.reader_id, ReaderRead.study_uid, ReaderRead.lesion_id),
                                   lambda row: (row["reader_id"], row["study_uid"], row["lesion_id"]),
                                   "reads.imported")


def _existing_keys(session: Session, kind: _Import[R], study_uids: list[str]) -> dict[tuple[str, ...], int]:
    """Key -> row id of what is already stored for these studies."""
    model = kind.model
    existing: dict[tuple[str, ...], int] = {}
    for start in range(0, len(study_uids), _CHUNK):
        chunk = study_uids[start:start + _CHUNK]
        for row in session.execute(select(model.id, *kind.key_columns).where(model.study_uid.in_(chunk))):
            existing[tuple(row[1:])] = row[0]
    return existing


class GroundTruthImports(RepositoryBase):
    def import_truth(self, rows: Sequence[TruthRow], *, file: str, replace: bool = False) -> int:
        """Add ground-truth lesions, all or nothing, with one audit event.

        Keys (study_uid, lesion_id) already present raise :class:`DuplicateRows` listing them,
        unless ``replace``: then the old rows are replaced and the event says how many.
        """
        return self._import(_TRUTH, rows, file=file, replace=replace)

    def import_reads(self, rows: Sequence[ReadRow], *, file: str, replace: bool = False) -> int:
        """Add readers' reads, all or nothing; keys are (reader_id, study_uid, lesion_id)."""
        return self._import(_READS, rows, file=file, replace=replace)

    def _import(self, kind: _Import[R], rows: Sequence[R], *, file: str, replace: bool) -> int:
        model = kind.model
        wanted = {kind.key(row) for row in rows}
        with self.db.session() as session:
            study_uids = sorted({row["study_uid"] for row in rows})
            existing = _existing_keys(session, kind, study_uids)
            clashes = sorted(k for k in wanted if k in existing)
            if clashes and not replace:
                raise DuplicateRows(clashes)
            for start in range(0, len(clashes), _CHUNK):
                ids = [existing[k] for k in clashes[start:start + _CHUNK]]
                session.execute(delete(model).where(model.id.in_(ids)))
            now = utcnow()
            session.add_all(model(**row, imported_at=now, import_file=file) for row in rows)
            add_event(session, kind.event_kind, f"{len(rows)} row(s) from {Path(file).name}"
                      + (f", {len(clashes)} replaced" if clashes else ""),
                      detail={"file": file, "rows": len(rows), "replaced": len(clashes), "studies": len(study_uids)})
            return len(rows)
