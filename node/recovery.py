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

from db.repository import Repository
from db.vocabulary import Severity
from node.header import UnreadableDataset, read_file_header
from node.instances import checked_identity, instance_record
from node.settings import NodeSettings
from node.spool import Spool, StoredFile
from node.uids import InvalidUID

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
        repository.audit("spool.temp_removed", f"{removed} partial writes removed", severity=Severity.WARNING,
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
        identity = checked_identity(header)
        if spool.relative_path(identity.study_uid, identity.series_uid, identity.sop_instance_uid) != relative:
            raise InvalidUID("file name does not match its UIDs")
    except (UnreadableDataset, InvalidUID, OSError) as exc:
        _quarantine(spool, path)
        repository.audit("spool.quarantined", str(exc), severity=Severity.ERROR, detail={"path": relative})
        return False
    data = path.read_bytes()
    stored = StoredFile(relative, len(data), hashlib.sha256(data).hexdigest(), replaced=False)
    record = instance_record(header, identity, stored, transfer_syntax)
    repository.record_instance(record, quiet_period_s=settings.quiet_period_s, hard_cap_s=settings.hard_cap_s,
                               event="instance.recovered")
    return True


def _quarantine(spool: Spool, path: Path) -> None:
    target = spool.root / "quarantine"
    target.mkdir(exist_ok=True)
    path.replace(target / path.name)
