"""``labels.csv`` and ``reads.csv`` into the database: validated line by line, then all or nothing.

Every problem in a file is reported with its line number before anything is written, because a
truth table that is half imported gives plausible but wrong metrics, the worst kind of error.
Unknown labels, unknown studies and duplicates (in the file or already imported) are errors;
rejections are audited like imports.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from db.engine import Database
from db.queries import known_studies, truth_rows
from db.repository import DuplicateRows, ReadRow, Repository, TruthRow
from db.vocabulary import Severity
from models.tasks import KNOWN_TASKS, known_task

log = logging.getLogger(__name__)

TRUTH_REQUIRED = ("patient_id", "study_uid", "accession_number", "lesion_id", "label")
TRUTH_OPTIONAL = ("source", "center_x_mm", "center_y_mm", "center_z_mm", "size_mm")
READS_REQUIRED = ("reader_id", "reader_group", "patient_id", "study_uid", "lesion_id", "label")
READS_OPTIONAL = ("confidence",)
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_ERRORS_SHOWN = 50

ImportRow = dict[str, str | float | None]
"""One validated row as the repository stores it: column -> text, number or None (empty)."""


@dataclass(frozen=True)
class LineError:
    line: int  # 1 is the header
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportRejectedError(ValueError):
    """The file was refused; ``errors`` says where and why. Nothing was written."""

    def __init__(self, path: Path, errors: list[LineError]) -> None:
        super().__init__(f"{path}: {len(errors)} problem(s); nothing imported (first: {errors[0]})")
        self.path, self.errors = path, errors


def allowed_labels(task: str | None) -> set[str]:
    """The task's classes, or every known task's classes when no task is named."""
    if task is None:
        return {label for definition in KNOWN_TASKS for label in definition.classes}
    definition = known_task(task)
    if definition is None:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(t.name for t in KNOWN_TASKS)}")
    return set(definition.classes)


def _read_csv(path: Path, required: tuple[str, ...], optional: tuple[str, ...]
              ) -> tuple[list[tuple[int, dict[str, str]]], list[LineError]]:
    """(line number, stripped row) pairs; a missing column or a ragged row is an error."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            expected = ", ".join(required + optional)
            return [], [LineError(1, f"missing column(s) {', '.join(missing)} (expected {expected})")]
        reader.fieldnames = header
        rows, errors = [], []
        for row in reader:
            line = reader.line_num
            if None in row or any(value is None for value in row.values()):
                errors.append(LineError(line, f"expected {len(header)} fields"))
                continue
            if not any(value.strip() for value in row.values()):
                continue  # blank line
            rows.append((line, {k: v.strip() for k, v in row.items()}))
    if not rows and not errors:
        errors.append(LineError(1, "no data rows"))
    return rows, errors


def _number(row: dict[str, str], column: str, errors: list[LineError], line: int, *,
            low: float | None = None, high: float | None = None) -> float | None:
    text = row.get(column, "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(LineError(line, f"{column} {text!r} is not a number"))
        return None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        errors.append(LineError(line, f"{column} {text} is outside [{low}, {high}]"))
        return None
    return value


def _label(row: dict[str, str], labels: set[str], errors: list[LineError], line: int) -> None:
    if row["label"] not in labels:
        errors.append(LineError(line, f"unknown label {row['label']!r} (allowed: {', '.join(sorted(labels))})"))


def _identifier(row: dict[str, str], column: str, errors: list[LineError], line: int, *, size: int = 64) -> None:
    if not row[column]:
        errors.append(LineError(line, f"{column} is empty"))
    elif len(row[column]) > size:
        errors.append(LineError(line, f"{column} is longer than {size} characters"))


def validate_truth(path: Path, database: Database, *, task: str | None = None,
                   allow_unknown_studies: bool = False) -> list[tuple[int, ImportRow]]:
    """Rows ready for :meth:`Repository.import_truth`, or :class:`ImportRejectedError` with every problem."""
    labels = allowed_labels(task)
    rows, errors = _read_csv(path, TRUTH_REQUIRED, TRUTH_OPTIONAL)
    studies = {s.study_uid: s for s in known_studies(database)}
    by_accession: dict[str, list[str]] = {}
    for known in studies.values():
        if known.accession_number:
            by_accession.setdefault(known.accession_number, []).append(known.study_uid)
    seen: dict[tuple[str, str], int] = {}
    out = []
    for line, row in rows:
        before = len(errors)
        _identifier(row, "patient_id", errors, line)
        _identifier(row, "lesion_id", errors, line)
        _label(row, labels, errors, line)
        uid, accession = row["study_uid"], row["accession_number"]
        if uid and not UID_PATTERN.match(uid) or len(uid) > 64:
            errors.append(LineError(line, f"study_uid {uid!r} is not a DICOM UID"))
        elif not uid and not accession:
            errors.append(LineError(line, "neither study_uid nor accession_number is given"))
        elif not uid:
            matches = by_accession.get(accession, [])
            if len(matches) != 1:
                errors.append(LineError(line, f"accession_number {accession!r} matches "
                                        f"{'no received study' if not matches else f'{len(matches)} studies'}"))
            else:
                uid = matches[0]
        elif uid not in studies and not allow_unknown_studies:
            errors.append(LineError(line, f"unknown study {uid} "
                                    "(not received; --allow-unknown-studies imports it anyway)"))
        study = studies.get(uid)
        if study is not None:
            if study.patient_id and row["patient_id"] and study.patient_id != row["patient_id"]:
                errors.append(LineError(line, f"patient_id {row['patient_id']!r} differs from the study's "
                                        f"{study.patient_id!r}"))
            if accession and study.accession_number and accession != study.accession_number:
                errors.append(LineError(line, f"accession_number {accession!r} differs from the study's "
                                        f"{study.accession_number!r}"))
        numbers = {c: _number(row, c, errors, line) for c in ("center_x_mm", "center_y_mm", "center_z_mm")}
        numbers["size_mm"] = _number(row, "size_mm", errors, line, low=0.0)
        key = (uid, row["lesion_id"])
        if uid and key in seen:
            errors.append(LineError(line, f"duplicate of line {seen[key]} (study {uid}, lesion {row['lesion_id']})"))
        seen.setdefault(key, line)
        if len(errors) == before:
            out.append((line, {"patient_id": row["patient_id"], "study_uid": uid,
                               "accession_number": accession or (study.accession_number if study else None) or None,
                               "lesion_id": row["lesion_id"], "label": row["label"],
                               "source": row.get("source") or None, **numbers}))
    if errors:
        raise ImportRejectedError(path, errors)
    return out


def validate_reads(path: Path, database: Database, *, task: str | None = None
                   ) -> list[tuple[int, ImportRow]]:
    """Rows ready for :meth:`Repository.import_reads`; each read must name a lesion with truth."""
    labels = allowed_labels(task)
    rows, errors = _read_csv(path, READS_REQUIRED, READS_OPTIONAL)
    truth = {(t.study_uid, t.lesion_id): t.patient_id for t in truth_rows(database)}
    truth_studies = {study for study, _ in truth}
    received = {s.study_uid for s in known_studies(database)}
    seen: dict[tuple[str, str, str], int] = {}
    out = []
    for line, row in rows:
        before = len(errors)
        for column in ("reader_id", "patient_id", "lesion_id"):
            _identifier(row, column, errors, line)
        _identifier(row, "reader_group", errors, line, size=32)
        _label(row, labels, errors, line)
        confidence = _number(row, "confidence", errors, line, low=0.0, high=1.0)
        uid = row["study_uid"]
        if uid not in truth_studies and uid not in received:
            errors.append(LineError(line, f"unknown study {uid!r} (neither received nor in the ground truth)"))
        elif (uid, row["lesion_id"]) not in truth:
            errors.append(LineError(line, f"lesion {row['lesion_id']!r} of study {uid} has no ground truth "
                                    "(import labels.csv first)"))
        elif row["patient_id"] and truth[(uid, row["lesion_id"])] != row["patient_id"]:
            errors.append(LineError(line, f"patient_id {row['patient_id']!r} differs from the ground truth's "
                                    f"{truth[(uid, row['lesion_id'])]!r}"))
        key = (row["reader_id"], uid, row["lesion_id"])
        if key in seen:
            errors.append(LineError(line, f"duplicate of line {seen[key]} (reader {key[0]}, study {uid}, "
                                    f"lesion {key[2]})"))
        seen.setdefault(key, line)
        if len(errors) == before:
            out.append((line, {k: row[k] for k in READS_REQUIRED} | {"confidence": confidence}))
    if errors:
        raise ImportRejectedError(path, errors)
    return out


def _key_lines(rows: Iterable[tuple[int, ImportRow]], key: tuple[str, ...]) -> dict[tuple[object, ...], int]:
    return {tuple(row[k] for k in key): line for line, row in rows}


def import_file(kind: str, path: Path, repository: Repository, *, task: str | None = None,
                replace: bool = False, allow_unknown_studies: bool = False) -> int:
    """Validate and import ``labels.csv`` (kind "truth") or ``reads.csv`` (kind "reads")."""
    try:
        key: tuple[str, ...]
        if kind == "truth":
            rows = validate_truth(path, repository.db, task=task, allow_unknown_studies=allow_unknown_studies)
            key = ("study_uid", "lesion_id")
        elif kind == "reads":
            rows = validate_reads(path, repository.db, task=task)
            key = ("reader_id", "study_uid", "lesion_id")
        else:
            raise ValueError(f"unknown import kind {kind!r}")
        try:
            checked = [row for _, row in rows]
            if kind == "truth":
                return repository.import_truth([cast(TruthRow, row) for row in checked], file=str(path),
                                               replace=replace)
            return repository.import_reads([cast(ReadRow, row) for row in checked], file=str(path),
                                           replace=replace)
        except DuplicateRows as exc:
            lines = _key_lines(rows, key)
            raise ImportRejectedError(path, [LineError(lines[k], f"already imported ({', '.join(k)}); "
                                                  "--replace replaces it") for k in exc.keys]) from None
    except ImportRejectedError as exc:
        repository.audit(f"{kind}.import_rejected", f"{path.name}: {len(exc.errors)} problem(s)",
                         severity=Severity.WARNING,
                         detail={"file": str(path), "errors": [str(e) for e in exc.errors[:MAX_ERRORS_SHOWN]],
                                 "error_count": len(exc.errors)})
        raise
