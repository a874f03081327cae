"""Retrospective batches: a folder of studies registered as if received, queued as batch work.

Re-running the same import skips every instance already in the spool (same path) and every study
that already has a job, so an interrupted import is simply started again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from db.repository import BATCH_QUEUE, InstanceRecord, Repository
from node.header import UnreadableDataset, read_file_header
from node.spool import Spool
from node.uids import InvalidUID, check_uid
from worker.grouping.series_info import iter_dicom_files

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    files: int = 0
    stored: int = 0
    already_there: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    studies_queued: list[str] = field(default_factory=list)
    studies_already_queued: int = 0

    def as_json(self) -> dict[str, object]:
        return {"files": self.files, "stored": self.stored, "already_there": self.already_there,
                "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
                "studies_queued": len(self.studies_queued), "studies_already_queued": self.studies_already_queued}


def import_folder(paths: Iterable[Path], spool: Spool, repository: Repository, *,
                  progress: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Store every DICOM file under ``paths`` in the spool, record it, and queue each study."""
    files = list(iter_dicom_files(paths))
    summary = ImportSummary(files=len(files))
    known: dict[str, set[str]] = {}
    touched: list[str] = []
    for number, path in enumerate(files, start=1):
        try:
            header, transfer_syntax = read_file_header(path)
            study = check_uid(header.study_uid, "Study Instance UID")
            series = check_uid(header.series_uid, "Series Instance UID")
            sop = check_uid(header.sop_instance_uid, "SOP Instance UID")
            sop_class = check_uid(header.sop_class_uid, "SOP Class UID")
        except (UnreadableDataset, InvalidUID, OSError) as exc:
            summary.unreadable.append((str(path), str(exc)))
            continue
        if study not in known:
            known[study] = repository.recorded_paths(study)
            touched.append(study)
        relative = spool.relative_path(study, series, sop)
        if relative in known[study]:
            summary.already_there += 1
        else:
            stored = spool.store(study, series, sop, [path.read_bytes()])
            repository.record_instance(InstanceRecord(
                study_uid=study, series_uid=series, sop_instance_uid=sop, sop_class_uid=sop_class,
                transfer_syntax_uid=transfer_syntax, path=stored.relative_path, size_bytes=stored.size_bytes,
                sha256=stored.sha256, patient_id=header.patient_id, accession_number=header.accession_number,
                study_date=header.study_date, modality=header.modality, series_number=header.series_number,
                series_description=header.series_description, calling_ae="BATCH-IMPORT",
            ), quiet_period_s=3600.0, hard_cap_s=86400.0, event="instance.imported")
            known[study].add(relative)
            summary.stored += 1
        if progress:
            progress(number, len(files))
    for study in touched:
        done = repository.complete_study(study, by="batch", queue=BATCH_QUEUE)
        if done is None:
            summary.studies_already_queued += 1
        else:
            summary.studies_queued.append(study)
    if summary.unreadable:
        repository.audit("batch.unreadable", f"{len(summary.unreadable)} files could not be imported",
                         severity="warning", detail={"files": summary.unreadable[:100]})
    return summary
