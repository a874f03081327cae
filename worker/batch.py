"""Retrospective batches: a folder of studies registered as if received, queued as batch work.

Re-running the same import skips every instance already in the spool (same path) and every study
that already has a job, so an interrupted import is simply started again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from db.repository import Repository
from db.task_names import BATCH_QUEUE
from db.vocabulary import CompletedBy, Severity
from node.header import UnreadableDataset, read_file_header
from node.instances import checked_identity, instance_record
from node.spool import Spool
from node.uids import InvalidUID
from worker.dicomweb import WebService, private_download_dir, retrieve_study
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
                  progress: Callable[[int, int], None] | None = None, shadow: bool = False) -> ImportSummary:
    """Store every DICOM file under ``paths`` in the spool, record it, and queue each study.

    Each study is queued as soon as its own files are in, so the workers analyse the first
    studies while the import stores the next ones. Which files make a study is only known once
    every header has been read (a study's files may lie anywhere under ``paths``), so a first
    pass reads the headers and keeps each file's study, and the second stores the files study
    by study, in the order the studies were first met.
    """
    files = list(iter_dicom_files(paths))
    summary = ImportSummary(files=len(files))
    by_study: dict[str, list[Path]] = {}
    for path in files:
        try:
            study = checked_identity(read_file_header(path)[0]).study_uid
        except (UnreadableDataset, InvalidUID, OSError) as exc:
            summary.unreadable.append((str(path), str(exc)))
            continue
        by_study.setdefault(study, []).append(path)
    done = len(summary.unreadable)
    for study, study_files in by_study.items():
        known = repository.recorded_paths(study)
        for path in study_files:
            _import_file(path, study, known, spool, repository, summary)
            done += 1
            if progress:
                progress(done, len(files))
        queued = repository.complete_study(study, by=CompletedBy.BATCH, queue=BATCH_QUEUE, shadow=shadow)
        if queued is None:
            summary.studies_already_queued += 1
        else:
            summary.studies_queued.append(study)
    if summary.unreadable:
        repository.audit("batch.unreadable", f"{len(summary.unreadable)} files could not be imported",
                         severity=Severity.WARNING, detail={"files": summary.unreadable[:100]})
    return summary


def _import_file(path: Path, study: str, known: set[str], spool: Spool, repository: Repository,
                 summary: ImportSummary) -> None:
    """One file of ``study`` into the spool and the database, unless it is there already. Its
    header is read again: it was readable a moment ago, and keeping every header of a large batch
    in memory between the passes would cost more than reading it twice."""
    try:
        header, transfer_syntax = read_file_header(path)
        identity = checked_identity(header)
    except (UnreadableDataset, InvalidUID, OSError) as exc:
        summary.unreadable.append((str(path), str(exc)))
        return
    if identity.study_uid != study:  # the file changed between the passes
        summary.unreadable.append((str(path), "the file changed during the import"))
        return
    relative = spool.relative_path(study, identity.series_uid, identity.sop_instance_uid)
    if relative in known:
        summary.already_there += 1
        return
    stored = spool.store(study, identity.series_uid, identity.sop_instance_uid, [path.read_bytes()])
    record = instance_record(header, identity, stored, transfer_syntax, calling_ae="BATCH-IMPORT")
    repository.record_instance(record, quiet_period_s=3600.0, hard_cap_s=86400.0, event="instance.imported")
    known.add(relative)
    summary.stored += 1


@dataclass
class RetrievedStudy:
    """One study of ``triphase batch dicomweb``: how many instances came, and what the import made of them."""

    study_uid: str
    retrieved: int = 0
    summary: ImportSummary | None = None
    problem: str | None = None

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"study_uid": self.study_uid, "retrieved": self.retrieved}
        if self.summary is not None:
            out |= {"stored": self.summary.stored, "already_there": self.summary.already_there,
                    "unreadable": len(self.summary.unreadable), "queued": bool(self.summary.studies_queued)}
        if self.problem:
            out["problem"] = self.problem
        return out


def import_from_dicomweb(service: WebService, study_uids: Iterable[str], spool: Spool, repository: Repository, *,
                         downloads: Path, shadow: bool = False) -> list[RetrievedStudy]:
    """WADO-RS each study into a private folder under ``downloads``, then :func:`import_folder` it.

    The files take the path every batch import takes (checked, stored in the spool, recorded, the
    study queued on the batch queue); the downloaded copies are removed after each study. A study
    that fails to arrive is reported and the others go on.
    """
    done = []
    for study_uid in study_uids:
        row = RetrievedStudy(study_uid)
        with private_download_dir(downloads) as folder:
            try:
                row.retrieved = len(retrieve_study(service, study_uid, Path(folder)))
            except requests.RequestException as exc:
                row.problem = f"retrieve failed: {exc}"
            if row.retrieved:
                row.summary = import_folder([Path(folder)], spool, repository, shadow=shadow)
            elif row.problem is None:
                row.problem = "the server returned no instances"
        done.append(row)
    return done
