"""The only writer of the audit database.

Every change of state goes through a method here, in its own transaction, together with the audit
event that explains it; so the trail and the state can never disagree. Readers use
:mod:`db.queries`. Each concern lives in its own module; :class:`Repository` is all of them.
"""

from __future__ import annotations

from db.repository.associations import AssociationWrites
from db.repository.completion import CompletedStudy, Completion, ReceivingStudy, StudyCompletion, StudyFile
from db.repository.ground_truth import DuplicateRows, GroundTruthImports, ReadRow, TruthRow
from db.repository.instances import InstanceRecord, InstanceWrites, RecordOutcome, UIDConflict
from db.repository.jobs import JobWrites, StaleJob
from db.repository.outbox import OutboxWrites, PendingTask, publisher_identity

__all__ = [
    "CompletedStudy",
    "Completion",
    "DuplicateRows",
    "InstanceRecord",
    "PendingTask",
    "ReadRow",
    "ReceivingStudy",
    "RecordOutcome",
    "Repository",
    "StaleJob",
    "StudyFile",
    "TruthRow",
    "UIDConflict",
    "publisher_identity",
]


class Repository(AssociationWrites, InstanceWrites, StudyCompletion, JobWrites, OutboxWrites, GroundTruthImports):
    """Associations, instances, study completion, jobs and the outbox, ground-truth imports."""
