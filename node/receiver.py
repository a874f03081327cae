"""The C-STORE path: check, write durably, record, and only then answer success.

Each association runs on its own pynetdicom thread; the handler keeps no state beyond the
per-association counters in :class:`AssociationTracker`. Decoding, ML and any slow work belong to
the worker, never here.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from db.repository import InstanceRecord, RecordOutcome, Repository, UIDConflict
from db.vocabulary import Severity
from node.header import Header, UnreadableDataset, read_received_header
from node.instances import InstanceIdentity, checked_identity, instance_record
from node.intake import IntakeProblem, ReceivedFile, received_file
from node.metrics import Metrics
from node.settings import NodeSettings
from node.spool import LowDiskSpace, Spool, StoredFile
from node.statuses import StoreStatus
from node.uids import InvalidUID, MissingUID, check_uid

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class AssociationStats:
    association_id: int
    calling_ae: str
    quiet_period_s: float
    stored: int = 0
    failed: int = 0
    bytes_stored: int = 0


@dataclass
class AssociationTracker:
    """Per-association counters, keyed by the pynetdicom Association object."""

    _stats: dict[int, AssociationStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, assoc: Association, stats: AssociationStats) -> None:
        with self._lock:
            self._stats[id(assoc)] = stats

    def get(self, assoc: Association) -> AssociationStats | None:
        with self._lock:
            return self._stats.get(id(assoc))

    def pop(self, assoc: Association) -> AssociationStats | None:
        with self._lock:
            return self._stats.pop(id(assoc), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._stats)


def best_effort(action: Callable[[], T], what: str) -> T | None:
    """Run a database write the DICOM exchange must not wait on; if it fails, log it and go on.

    The peer is answered (a status, an A-ASSOCIATE-RJ) whether or not the audit database is up.
    """
    try:
        return action()
    except Exception:  # whatever the database raises, the peer still gets its answer
        log.exception("could not %s", what)
        return None


class RefusalBacklog:
    """Refusals whose audit row could not be written (the database on a full disk, or down).

    Never silently lost: counted here by status (a bounded map) and written as one aggregated
    ``instance.refused`` row as soon as a database write succeeds again.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, status: str) -> None:
        with self._lock:
            self._counts[status] += 1

    def take(self) -> Counter[str]:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        return counts

    def give_back(self, counts: Counter[str]) -> None:
        with self._lock:
            self._counts.update(counts)


class StoreRefused(Exception):
    """An instance is refused; carries the status to answer and the audit wording."""

    def __init__(self, status: StoreStatus, reason: str, *, severity: Severity = Severity.WARNING) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.severity = severity


class StoreHandler:
    """``EVT_C_STORE`` handler with its dependencies bound (no globals)."""

    def __init__(self, settings: NodeSettings, spool: Spool, repository: Repository,
                 tracker: AssociationTracker, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.spool = spool
        self.repository = repository
        self.tracker = tracker
        self.draining = threading.Event()  # set during shutdown: refuse new stores
        self.backlog = RefusalBacklog()
        self._in_flight = 0
        self._in_flight_lock = threading.Condition()

    def __call__(self, event: Event) -> int:
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            return self._handle(event)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1
                self._in_flight_lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no C-STORE is being handled (graceful shutdown)."""
        with self._in_flight_lock:
            return self._in_flight_lock.wait_for(lambda: self._in_flight == 0, timeout)

    def _handle(self, event: Event) -> int:
        stats = self.tracker.get(event.assoc)
        sop_uid_hint = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "")
        try:
            if self.draining.is_set():
                raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_SHUTDOWN, "node is shutting down")
            stored_bytes, record = self._store(event, stats)
        except StoreRefused as refusal:
            return self._refuse(refusal, stats, sop_uid_hint)
        except Exception as exc:  # a bug must still answer with a failure status
            log.exception("unexpected error while storing an instance")
            internal = StoreRefused(StoreStatus.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}",
                                    severity=Severity.ERROR)
            return self._refuse(internal, stats, sop_uid_hint)
        if stats:
            stats.stored += 1
            stats.bytes_stored += stored_bytes
        self.metrics.stored()
        self.flush_backlog()
        log.debug("stored %s", record.sop_instance_uid)
        return int(StoreStatus.SUCCESS)

    def _refuse(self, refusal: StoreRefused, stats: AssociationStats | None, sop_uid_hint: str) -> int:
        if stats:
            stats.failed += 1
        self.metrics.refused(refusal.status)
        log.warning("instance refused (0x%04X): %s", refusal.status, refusal.reason)
        self._audit_refusal(refusal, stats.association_id if stats else None, sop_uid_hint)
        return int(refusal.status)

    def _audit_refusal(self, refusal: StoreRefused, association_id: int | None, sop_uid: str) -> None:
        try:
            safe_uid: str | None = check_uid(sop_uid, "SOP Instance UID")
        except InvalidUID:
            safe_uid = None
        status = f"0x{int(refusal.status):04X}"
        try:
            self.repository.audit("instance.refused", refusal.reason, severity=refusal.severity,
                                  association_id=association_id, sop_instance_uid=safe_uid, detail={"status": status})
        except Exception:  # the peer still gets its answer; the refusal is counted for later
            log.exception("could not audit a refused instance; counted for an aggregated row")
            self.backlog.add(status)
            return
        self.flush_backlog()

    def flush_backlog(self) -> None:
        """Write the refusals that could not be audited one by one, as one row (after any write
        succeeded again: a stored instance or an audited refusal)."""
        counts = self.backlog.take()
        if not counts:
            return
        total = sum(counts.values())
        try:
            self.repository.audit("instance.refused", f"{total} refusals that could not be audited at the time",
                                  severity=Severity.ERROR, detail={"count": total, "by_status": dict(counts)})
        except Exception:  # still failing: keep the counts for the next try
            log.exception("could not audit %d earlier refusals", total)
            self.backlog.give_back(counts)

    def _store(self, event: Event, stats: AssociationStats | None) -> tuple[int, InstanceRecord]:
        """Write and record one instance: header, durable file in its place, then the row.

        The receiving thread hashed the file as it wrote it and kept its first bytes, from which
        the header is read; the spool fsyncs the file (or waits for the fsync
        :func:`node.intake.flush_early` started, where the request was handed to the association
        thread) before the rename. (Also measured: writing the row's statements
        while the disk works, committing after. No faster with one association, and slower with
        several: the transaction held SQLite's lock, or the study row's, while it waited.)
        """
        request = event.request
        if not isinstance(request, C_STORE):
            raise TypeError(f"a C-STORE handler was given a {type(request).__name__}")
        received = received_file(event)
        if received is None:
            raise StoreRefused(StoreStatus.CANNOT_UNDERSTAND, "the C-STORE request carries no data set")
        self._check_intake(received)
        transfer_syntax = str(event.context.transfer_syntax)
        header = _read_header(received, transfer_syntax)
        identity = _identity(header, request)
        stored = self._adopt(identity, received)
        record = instance_record(header, identity, stored, transfer_syntax,
                                 calling_ae=stats.calling_ae if stats else None,
                                 association_id=stats.association_id if stats else None)
        outcome = self._record(record, stored, stats)
        if outcome.superseded_path:
            self._remove_superseded(outcome.superseded_path)
        return stored.size_bytes, record

    def _adopt(self, identity: InstanceIdentity, received: ReceivedFile) -> StoredFile:
        """The file, fsynced, renamed into place and its folder fsynced; or the refusal it earned."""
        try:
            return self.spool.adopt(identity.study_uid, identity.series_uid, identity.sop_instance_uid, received)
        except LowDiskSpace as exc:
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_DISK,
                               f"free disk space below {self.settings.min_free_disk_mb} MB",
                               severity=Severity.ERROR) from exc
        except OSError as exc:
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_WRITE,
                               f"cannot write to the spool: {exc.strerror or exc}", severity=Severity.ERROR) from exc

    def _remove_superseded(self, relative_path: str) -> None:
        """The re-sent instance moved to another study or series: its old file goes, so one row
        has one file. Done after the commit; if it fails, start-up recovery removes it."""
        try:
            self.spool.remove(relative_path)
        except OSError as exc:
            log.warning("could not remove the superseded file %s: %s", relative_path, exc)

    def _check_intake(self, received: ReceivedFile) -> None:
        """Refuse a data set whose writing stopped early (too large, low disk, write error)."""
        if received.problem is IntakeProblem.TOO_LARGE:
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_TOO_LARGE,
                               f"instance of {received.received} bytes or more exceeds max_instance_mb "
                               f"({self.settings.max_instance_mb} MiB)", severity=Severity.ERROR)
        if received.problem is IntakeProblem.LOW_DISK:
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_DISK,
                               f"free disk space below {self.settings.min_free_disk_mb} MB", severity=Severity.ERROR)
        if received.problem is IntakeProblem.WRITE_FAILED:
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_WRITE, f"cannot write to the spool: {received.error}",
                               severity=Severity.ERROR)

    def _record(self, record: InstanceRecord, stored: StoredFile, stats: AssociationStats | None) -> RecordOutcome:
        quiet = stats.quiet_period_s if stats else self.settings.quiet_period_s
        try:
            return self.repository.record_instance(record, quiet_period_s=quiet, hard_cap_s=self.settings.hard_cap_s)
        except UIDConflict as exc:
            if not stored.replaced:
                self.spool.remove(stored.relative_path)
            raise StoreRefused(StoreStatus.INVALID_UID, str(exc)) from exc
        except Exception as exc:  # any database failure refuses the instance
            log.error("audit database refused an instance: %s", type(exc).__name__)
            if not stored.replaced:
                # Never leave an unrecorded file that looks valid; the peer will send it again.
                self.spool.remove(stored.relative_path)
            raise StoreRefused(StoreStatus.OUT_OF_RESOURCES_DATABASE,
                               f"audit database unavailable: {type(exc).__name__}", severity=Severity.ERROR) from exc


def _read_header(received: ReceivedFile, transfer_syntax: str) -> Header:
    try:
        offset = received.dataset_offset()
        return read_received_header(received.reader, offset, received.size - offset, transfer_syntax,
                                    head=received.head)
    except UnreadableDataset as exc:
        raise StoreRefused(StoreStatus.CANNOT_UNDERSTAND, str(exc)) from exc


def _identity(header: Header, request: C_STORE) -> InstanceIdentity:
    """The checked UIDs of a data set, which must match its C-STORE request's."""
    try:
        identity = checked_identity(header)
    except MissingUID as exc:
        raise StoreRefused(StoreStatus.MISSING_IDENTIFIER, str(exc)) from exc
    except InvalidUID as exc:
        raise StoreRefused(StoreStatus.INVALID_UID, str(exc)) from exc
    if identity.sop_instance_uid != str(request.AffectedSOPInstanceUID).rstrip("\x00 "):
        raise StoreRefused(StoreStatus.DATASET_DOES_NOT_MATCH, "SOP Instance UID differs from the C-STORE request's")
    if identity.sop_class_uid != str(request.AffectedSOPClassUID).rstrip("\x00 "):
        raise StoreRefused(StoreStatus.DATASET_DOES_NOT_MATCH, "SOP Class UID differs from the C-STORE request's")
    return identity
