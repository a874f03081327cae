"""The closed sets of values the audit database stores as strings, one enum each.

Each enum is a :class:`~enum.StrEnum`, so a member *is* its stored string: columns keep the plain
text they always held (readable in SQL, no migration), while code compares and passes members and a
typo is an ``AttributeError`` instead of a silent mismatch. Job and study states live beside their
transition table in :mod:`db.states`.
"""

from __future__ import annotations

from enum import StrEnum


class AssociationResult(StrEnum):
    """How an association ended (``associations.result``)."""

    OPEN = "open"
    RELEASED = "released"
    ABORTED = "aborted"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"  # the node stopped (or crashed) while it was open


class CompletedBy(StrEnum):
    """Which rule completed a study revision (``studies.completed_by``)."""

    ROLES = "roles"  # every required role present and settled
    QUIET = "quiet"  # the quiet period after the last instance ran out
    CAP = "cap"  # the hard cap after the first instance ran out
    MANUAL = "manual"  # ``triphase studies complete``
    BATCH = "batch"  # queued by ``triphase batch``


class Severity(StrEnum):
    """How much an audit event matters to an operator (``audit_events.severity``)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class AnalysisOutcome(StrEnum):
    """What the analysis of one study came to."""

    ANALYSED = "analysed"
    SKIPPED = "skipped"


class SendState(StrEnum):
    """What sending a job's results to one destination came to."""

    SENT = "sent"
    SHADOWED = "shadowed"
    FAILED = "failed"
