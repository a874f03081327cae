"""Start-up reconciliation after a crash (kill -9, power loss).

What a crash can leave, and what happens to it:
- ``.tmp/*.part``: a write that never reached its rename. It was never answered with success:
  removed.
- A complete file in place without a database row: the node died between the rename and the
  commit, so the peer got no success and will resend; the file is whole (fsynced before the
  rename), so it is recorded now rather than lost, and audited as recovered.
- A file whose SOP instance has a row pointing elsewhere: a re-send moved the instance and the
  node died before removing the old file. The row is the truth: the file is removed, never
  recorded (recording it would move the instance back and reopen both studies at every start).
- Associations still marked open: closed as interrupted.
- Studies still receiving: their quiet deadline is counted again from the moment the node listens
  again (:func:`renew_deadlines`, called just before it does), and their hard cap is pushed to at
  least one quiet period from then, so a transfer cut off by the crash is not completed a second
  after the restart, before any sender could resend (audited per study). Building the node takes
  a second or more on a small machine: counted from the file checks instead, that time would be
  taken from the senders.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections import Counter
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


class Orphan(enum.Enum):
    """What became of a spool file that no row points to."""

    RECOVERED = "recovered"
    QUARANTINED = "quarantined"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class RecoveryReport:
    temp_files_removed: int
    files_recovered: int
    files_quarantined: int
    associations_interrupted: int
    files_superseded: int = 0


def recover(spool: Spool, repository: Repository, settings: NodeSettings) -> RecoveryReport:
    removed = _remove_temp_files(spool, repository)
    orphans: Counter[Orphan] = Counter()
    by_study: dict[str, list[str]] = {}
    for relative in spool.instance_files():
        by_study.setdefault(relative.split("/", 1)[0], []).append(relative)
    for study_dir, paths in by_study.items():
        known = repository.recorded_paths(study_dir)
        for relative in paths:
            if relative not in known:
                orphans[_settle_orphan(spool, repository, settings, relative)] += 1

    interrupted = repository.close_interrupted_associations()
    report = RecoveryReport(removed, orphans[Orphan.RECOVERED], orphans[Orphan.QUARANTINED], interrupted,
                            orphans[Orphan.SUPERSEDED])
    if removed or sum(orphans.values()) or interrupted:
        log.warning("start-up recovery: %s", report)
    return report


def renew_deadlines(repository: Repository, settings: NodeSettings) -> int:
    """Give the studies still receiving a fresh quiet period from now; call it right before the
    node listens again. How many studies were renewed (each is audited)."""
    renewed = repository.renew_receiving_deadlines(quiet_period_s=settings.quiet_period_s)
    if renewed:
        log.warning("start-up recovery: %d studies still receiving get a fresh quiet period", renewed)
    return renewed


def _remove_temp_files(spool: Spool, repository: Repository) -> int:
    removed = 0
    for part in spool.leftover_temp_files():
        part.unlink(missing_ok=True)
        removed += 1
    if removed:
        repository.audit("spool.temp_removed", f"{removed} partial writes removed", severity=Severity.WARNING,
                         detail={"count": removed})
    return removed


def _settle_orphan(spool: Spool, repository: Repository, settings: NodeSettings, relative: str) -> Orphan:
    path = spool.absolute(relative)
    try:
        header, transfer_syntax = read_file_header(path)
        identity = checked_identity(header)
        if spool.relative_path(identity.study_uid, identity.series_uid, identity.sop_instance_uid) != relative:
            raise InvalidUID("file name does not match its UIDs")
    except (UnreadableDataset, InvalidUID, OSError) as exc:
        _quarantine(spool, path)
        repository.audit("spool.quarantined", str(exc), severity=Severity.ERROR, detail={"path": relative})
        return Orphan.QUARANTINED
    current = repository.instance_path(identity.sop_instance_uid)
    if current is not None and current != relative:
        spool.remove(relative)
        repository.audit("spool.superseded", f"removed {relative}: the instance's row points to {current}",
                         severity=Severity.WARNING, sop_instance_uid=identity.sop_instance_uid,
                         study_uid=identity.study_uid, detail={"path": relative, "recorded_path": current})
        return Orphan.SUPERSEDED
    stored = StoredFile(relative, path.stat().st_size, _sha256(path), replaced=False)
    record = instance_record(header, identity, stored, transfer_syntax)
    repository.record_instance(record, quiet_period_s=settings.quiet_period_s, hard_cap_s=settings.hard_cap_s,
                               event="instance.recovered")
    return Orphan.RECOVERED


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _quarantine(spool: Spool, path: Path) -> None:
    target = spool.root / "quarantine"
    target.mkdir(exist_ok=True)
    path.replace(target / path.name)
