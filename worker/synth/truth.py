"""Ground truth and simulated readers: labels.csv, reads.csv, and the breath-hold offsets.

The files are written row by row as studies are generated, so a run of any size never holds more
than one study in memory. Column names follow the shared contracts exactly.

Lesion centres in labels.csv are where the lesion lies in the reference series (the one the SEG is
drawn on: portal venous CT, hepatobiliary MRI). motion.csv gives, per series and acquisition, the
liver's breath-hold offset relative to that reference series (mostly craniocaudal); the DICOM files
record nothing of it, as real scanners do not.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol

import numpy as np

LABEL_COLUMNS = ("patient_id", "study_uid", "accession_number", "lesion_id", "label", "source",
                 "center_x_mm", "center_y_mm", "center_z_mm", "size_mm")
READ_COLUMNS = ("reader_id", "reader_group", "patient_id", "study_uid", "lesion_id", "label", "confidence")
MOTION_COLUMNS = ("patient_id", "study_uid", "series_uid", "series_number", "acquisition_number", "role",
                  "reference", "dx_mm", "dy_mm", "dz_mm")
TRUTH_SOURCE = "synthetic"


@dataclass(frozen=True)
class ReaderGroup:
    """``count`` readers of one group (e.g. general, abdominal) with a mean accuracy."""

    name: str
    count: int
    accuracy: float


def parse_readers(text: str) -> tuple[ReaderGroup, ...]:
    """``group:count:accuracy[,...]``, e.g. ``general:3:0.39,abdominal:3:0.48``; empty for none."""
    groups = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            name, count, accuracy = part.split(":")
            group = ReaderGroup(name.strip(), int(count), float(accuracy))
        except ValueError:
            raise ValueError(f"readers must be group:count:accuracy, not {part!r}") from None
        if not group.name or group.count < 0 or not 0.0 <= group.accuracy <= 1.0:
            raise ValueError(f"readers entry {part!r}: need a name, a count >= 0 and accuracy in [0, 1]")
        groups.append(group)
    return tuple(groups)


DEFAULT_READERS = {
    # Yamada 2019: general radiologists 39.1%, abdominal radiologists 47.9%.
    "ct-histology": "general:3:0.39,abdominal:3:0.48",
    # Readers' AUC 0.89 on the MRI task.
    "mri-ehcc": "general:2:0.76,abdominal:2:0.84",
}


@dataclass(frozen=True)
class LabelRow:
    patient_id: str
    study_uid: str
    accession_number: str
    lesion_id: str
    label: str
    center_mm: tuple[float, float, float]
    size_mm: float

    def as_row(self) -> list[str]:
        return [self.patient_id, self.study_uid, self.accession_number, self.lesion_id, self.label,
                TRUTH_SOURCE, *(f"{v:.2f}" for v in self.center_mm), f"{self.size_mm:.1f}"]


def simulate_reads(rng: np.random.Generator, groups: Sequence[ReaderGroup], labels: Sequence[str],
                   truth: LabelRow) -> list[list[str]]:
    """Each reader's call on one lesion: right with the reader's accuracy, else a neighbouring class.

    Mistakes favour the neighbouring class (classes are ordered by grade), as confusions between
    adjacent histological grades are the common ones. Confidence is higher on right calls.
    """
    rows = []
    truth_index = labels.index(truth.label)
    for group in groups:
        for k in range(group.count):
            reader_rng = np.random.default_rng([int(rng.integers(1 << 31)), k])
            accuracy = float(np.clip(group.accuracy + reader_rng.normal(0.0, 0.03), 0.0, 1.0))
            if reader_rng.uniform() < accuracy or len(labels) == 1:
                label = truth.label
                confidence = reader_rng.uniform(0.55, 0.95)
            else:
                weights = np.array([0.0 if i == truth_index else np.exp(-abs(i - truth_index))
                                    for i in range(len(labels))])
                label = labels[int(reader_rng.choice(len(labels), p=weights / weights.sum()))]
                confidence = reader_rng.uniform(0.3, 0.8)
            rows.append([f"{group.name}-{k + 1}", group.name, truth.patient_id, truth.study_uid, truth.lesion_id,
                         label, f"{confidence:.2f}"])
    return rows


class RowWriter(Protocol):
    """What ``csv.writer`` returns, as far as the truth files use it."""

    def writerow(self, row: Iterable[object], /) -> object: ...


class TruthWriter:
    """labels.csv, reads.csv and motion.csv under the output folder, appended study by study."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._handles: list[IO[str]] = []
        self.labels = self._open("labels.csv", LABEL_COLUMNS)
        self.reads = self._open("reads.csv", READ_COLUMNS)
        self.motion = self._open("motion.csv", MOTION_COLUMNS)

    def _open(self, name: str, columns: Sequence[str]) -> RowWriter:
        handle = (self.out_dir / name).open("w", newline="", encoding="utf-8")
        self._handles.append(handle)
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        return writer

    def flush(self) -> None:
        for handle in self._handles:
            handle.flush()

    def close(self) -> None:
        for handle in self._handles:
            handle.close()

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
