"""What sending one job's results to one destination came to, whatever the protocol.

C-STORE (:mod:`worker.results.writeback`) and STOW-RS (:mod:`worker.results.stow`) both answer
with a :class:`SendOutcome`, so the send task, its retries and the audit treat them alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from db.vocabulary import SendState


@dataclass(frozen=True)
class SendOutcome:
    """One destination's result; ``transient`` marks a failure that a later attempt may cure."""

    destination: str
    state: SendState
    attempts: int = 0
    statuses: Mapping[str, str] = field(default_factory=dict)  # file name -> status or error
    reason: str | None = None
    transient: bool = False

    def as_json(self) -> dict[str, object]:
        return {"destination": self.destination, "state": self.state, "attempts": self.attempts,
                "statuses": dict(self.statuses), "reason": self.reason}
