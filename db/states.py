"""The job state machine: which state may follow which, in one place.

    ready -> queued -> running -> analysed -> sent | shadowed
    any active state -> skipped (typed reason) | failed (parked, reason a person can act on)
    analysed | sent | failed -> queued   (``triphase resend``: the send step again)

A transition not in the table is a programming error and raises :class:`IllegalTransition`, so a
bug can never move a job silently backwards. Nothing but the operator's resend moves a job back:
a redelivered task runs again from the state it finds (:mod:`worker.jobs`), and every move is a
compare-and-set from a named state (:mod:`db.repository.jobs`). Who makes which move is tabled in
docs/ARCHITECTURE.md ("Jobs, claims and races").
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    ANALYSED = "analysed"
    SENT = "sent"
    SHADOWED = "shadowed"
    SKIPPED = "skipped"
    FAILED = "failed"


class StudyState(StrEnum):
    RECEIVING = "receiving"
    COMPLETE = "complete"


TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.READY: frozenset({JobState.QUEUED, JobState.SKIPPED, JobState.FAILED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.SKIPPED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.ANALYSED, JobState.SKIPPED, JobState.FAILED}),
    JobState.ANALYSED: frozenset({JobState.SENT, JobState.SHADOWED, JobState.QUEUED, JobState.FAILED}),
    JobState.SENT: frozenset({JobState.QUEUED}),
    JobState.SHADOWED: frozenset(),
    JobState.SKIPPED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
}

TERMINAL: frozenset[JobState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)


class IllegalTransition(ValueError):
    """A job was asked to move to a state that may not follow its current one."""


def check_transition(current: str | JobState, target: str | JobState) -> JobState:
    """Return ``target`` as a :class:`JobState` if it may follow ``current``, else raise."""
    cur, nxt = JobState(current), JobState(target)
    if nxt not in TRANSITIONS[cur]:
        raise IllegalTransition(f"job state {cur.value} -> {nxt.value} is not allowed")
    return nxt
