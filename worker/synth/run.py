"""A run of many studies, streamed to disk one at a time with the truth files kept in step."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.synth.context import StudyOptions
from worker.synth.study import StudyRecord, generate_study
from worker.synth.tasks import task_spec
from worker.synth.truth import ReaderGroup, TruthWriter, simulate_reads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    studies: int
    files: int
    lesions: int
    label_counts: dict[str, int]


def write_truth(writer: TruthWriter, record: StudyRecord, readers: Sequence[ReaderGroup],
                labels: Sequence[str], rng: np.random.Generator) -> None:
    """Append one study's truth, readers' reads and breath-hold offsets."""
    for row in record.labels:
        writer.labels.writerow(row.as_row())
        for read in simulate_reads(rng, readers, labels, row):
            writer.reads.writerow(read)
    ref = record.reference_offset
    for series in record.series:
        for role, number, offset, is_reference in series.acquisitions:
            writer.motion.writerow([record.patient_id, record.study_uid, series.series_uid, series.number, number,
                                    role or "", "yes" if is_reference else "",
                                    *(f"{o - r:.2f}" for o, r in zip(offset, ref, strict=True))])
    writer.flush()


def generate_run(out_dir: Path, options: StudyOptions, studies: int, readers: Sequence[ReaderGroup],
                 on_study: Callable[[StudyRecord], None] | None = None) -> RunSummary:
    """Write ``studies`` studies and the truth files into ``out_dir``."""
    if studies < 1:
        raise ValueError("studies must be at least 1")
    spec = task_spec(options.task)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {label: 0 for label in spec.labels}
    files = lesions = 0
    with TruthWriter(out_dir) as writer:
        for index in range(studies):
            record = generate_study(out_dir, options, index)
            reads_rng = np.random.default_rng([options.seed, index, 7])
            write_truth(writer, record, readers, spec.labels, reads_rng)
            files += record.files
            for row in record.labels:
                counts[row.label] += 1
                lesions += 1
            if on_study is not None:
                on_study(record)
    log.info("%d studies, %d files, %d lesions written to %s", studies, files, lesions, out_dir)
    return RunSummary(studies=studies, files=files, lesions=lesions, label_counts=counts)
