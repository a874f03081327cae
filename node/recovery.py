"""Start-up reconciliation after a crash (kill -9, power loss).

What a crash can leave, and what happens to it:
- ``.tmp/*.part``: a write that never reached its rename. It was never answered with success:
  removed.
- A complete file in place without a database row: the node died between the rename and the
  commit, so the peer got no success and will resend; the file is whole (fsynced before the
  rename), so it is recorded now rather than lost, and audited as recovered.
- Associations still marked open: closed as interrupted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from db.repository import InstanceRecord, Repository
from node.header import UnreadableDataset, read_file_header
from node.settings import NodeSettings
from node.spool import Spool
from node.uids import InvalidUID, check_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoveryReport:
    temp_files_removed: int
    files_recovered: int
    files_quarantined: int
    associations_interrupted: int


def recover(spool: Spool, repository: Repository, settings: NodeSettings) -> RecoveryReport:
    removed = 0
    for part in spool.leftover_temp_files():
        part.unlink(missing_ok=True)
        removed += 1
    if removed:
        repository.audit("spool.temp_removed", f"{removed} partial writes removed", severity="warning",
                         detail={"count": removed})

    recovered = quarantined = 0
    by_study: dict[str, list[str]] = {}
    for relative in spool.instance_files():
        by_study.setdefault(relative.split("/", 1)[0], []).append(relative)
    for study_dir, paths in by_study.items():
        known = repository.recorded_paths(study_dir)
        for relative in paths:
            if relative in known:
                continue
            if _record_orphan(spool, repository, settings, relative):
                recovered += 1
            else:
                quarantined += 1

    interrupted = repository.close_interrupted_associations()
    report = RecoveryReport(removed, recovered, quarantined, interrupted)
    if removed or recovered or quarantined or interrupted:
        log.warning("start-up recovery: %s", report)
    return report


def _record_orphan(spool: Spool, repository: Repository, settings: NodeSettings, relative: str) -> bool:
    path = spool.absolute(relative)
    try:
        header, transfer_syntax = read_file_header(path)
        study_uid = check_uid(header.study_uid, "Study Instance UID")
        series_uid = check_uid(header.series_uid, "Series Instance UID")
        sop_uid = check_uid(header.sop_instance_uid, "SOP Instance UID")
        sop_class = check_uid(header.sop_class_uid, "SOP Class UID")
        if spool.relative_path(study_uid, series_uid, sop_uid) != relative:
            raise InvalidUID("file name does not match its UIDs")
    except (UnreadableDataset, InvalidUID, OSError) as exc:
        _quarantine(spool, path)
        repository.audit("spool.quarantined", str(exc), severity="error", detail={"path": relative})
        return False
    data = path.read_bytes()
    record = InstanceRecord(
        study_uid=study_uid, series_uid=series_uid, sop_instance_uid=sop_uid, sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax, path=relative, size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), patient_id=header.patient_id,
        accession_number=header.accession_number, study_date=header.study_date, modality=header.modality,
        series_number=header.series_number, series_description=header.series_description,
    )
    repository.record_instance(record, quiet_period_s=settings.quiet_period_s, hard_cap_s=settings.hard_cap_s,
                               event="instance.recovered")
    return True


def _quarantine(spool: Spool, path: Path) -> None:
    target = spool.root / "quarantine"
    target.mkdir(exist_ok=True)
    path.replace(target / path.name)
