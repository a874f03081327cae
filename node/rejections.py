"""Rejected associations (unknown calling AE title, no slot left), audited without letting a
flood fill the database.

The first rejection from an address in a window is written at once (an association row and its
``association.rejected`` event, as before); the further ones from that address in the same window
are counted and written as one ``association.rejected`` event with the count when the window ends.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from db.vocabulary import Severity
from node.gate import Auditor
from node.periodic import PeriodicFlush

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejection:
    calling_ae: str
    called_ae: str
    address: str
    port: int
    reason: str


class RejectionLog(PeriodicFlush):
    """Per-address counts of rejected associations, flushed once per window (thread-safe)."""

    thread_name = "rejection-log"
    AUDIT_KIND = "association.rejected"

    def __init__(self, auditor: Auditor, write_first: Callable[[Rejection], object], window_s: float = 10.0) -> None:
        self.auditor = auditor
        self.write_first = write_first
        super().__init__(window_s)
        self._seen: set[str] = set()  # addresses whose first rejection of this window was written
        self._more: dict[str, Counter[str]] = {}  # address -> calling AE title -> further rejections
        self._lock = threading.Lock()

    def note(self, rejection: Rejection) -> None:
        with self._lock:
            first = rejection.address not in self._seen
            if first:
                self._seen.add(rejection.address)
            else:
                self._more.setdefault(rejection.address, Counter())[rejection.calling_ae] += 1
        if first:
            log.warning("association rejected: %s", rejection.reason)
            self.write_first(rejection)

    def flush(self) -> None:
        """Write the counts of this window (one row per address) and start a new one."""
        with self._lock:
            more, self._more, self._seen = self._more, {}, set()
        for address, titles in more.items():
            count = sum(titles.values())
            summary = ", ".join(f"{n} x {title!r}" for title, n in sorted(titles.items()))
            log.warning("%d more associations rejected from %s: %s", count, address, summary)
            try:
                self.auditor.audit(self.AUDIT_KIND, f"{count} more from {address} (calling AE titles: {summary})",
                                   severity=Severity.WARNING,
                                   detail={"address": address, "count": count, "calling_ae": dict(titles)})
            except Exception:  # rejections go on while the audit database is down
                log.exception("could not audit rejected associations")
