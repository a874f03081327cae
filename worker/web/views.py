"""What each page shows, assembled from the database: plain frozen records the templates render.

The templates do no lookups of their own; everything a page needs, including what must stay hidden
(patient identifiers unless ``show_patient``), is decided here, where it can be tested.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from db.engine import Database
from db.queries import (
    FailureEvent,
    JobRow,
    LesionResultRow,
    RevisionArrival,
    StudyDetail,
    audit_events,
    failure_events,
    lesion_results,
    study_detail,
)
from db.schema import AuditEvent
from db.states import JobState

FAILURE_KINDS = ("job.failed", "job.skipped", "send.failed", "instance.refused", "association.rejected",
                 "connection.refused", "spool.quarantined", "web.denied")
RESENDABLE = frozenset({JobState.SENT.value, JobState.FAILED.value, JobState.ANALYSED.value})
TERMINAL_KINDS = ("job.sent", "job.shadowed", "job.failed", "job.skipped")


@dataclass(frozen=True)
class Step:
    """One step of a job's way through the pipeline and how long it took since the step before."""

    name: str
    at: dt.datetime
    after: dt.timedelta | None


@dataclass(frozen=True)
class Role:
    name: str
    found: bool
    series_uid: str | None
    description: str | None
    acquisition_number: str | None


@dataclass(frozen=True)
class SendAnswer:
    """What one destination answered to one send."""

    at: dt.datetime
    destination: str
    state: str
    attempts: str
    reason: str
    objects: int


@dataclass(frozen=True)
class JobView:
    job: JobRow
    steps: list[Step]
    roles: list[Role]
    sends: list[SendAnswer]
    lesions: list[LesionResultRow]

    @property
    def resendable(self) -> bool:
        return self.job.state in RESENDABLE


@dataclass(frozen=True)
class StudyPage:
    study: StudyDetail
    jobs: list[JobView]
    events: list[AuditEvent]


def _first(events: Sequence[AuditEvent], *kinds: str) -> AuditEvent | None:
    return next((e for e in events if e.kind in kinds), None)


def _last(events: Sequence[AuditEvent], *kinds: str) -> AuditEvent | None:
    return next((e for e in reversed(events) if e.kind in kinds), None)


def job_steps(events: Sequence[AuditEvent], arrival: RevisionArrival | None) -> list[Step]:
    """received -> completed -> queued -> running -> analysed -> sent (or how it ended)."""
    points: list[tuple[str, dt.datetime]] = []
    if arrival is not None:
        points += [("first instance received", arrival.first_at), ("last instance received", arrival.last_at)]
    for name, event in (("completed", _first(events, "study.complete")), ("queued", _first(events, "job.queued")),
                        ("running", _first(events, "job.running")), ("analysed", _last(events, "job.analysed")),
                        ("ended", _last(events, *TERMINAL_KINDS))):
        if event is not None:
            points.append((event.kind.removeprefix("job.") if name == "ended" else name, event.at))
    return [Step(name, at, at - points[i - 1][1] if i else None) for i, (name, at) in enumerate(points)]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def job_roles(events: Sequence[AuditEvent]) -> list[Role]:
    """The phases the grouping looked for, found (with their series) or missing, from the job's trail."""
    event = _last(events, "job.analysed", "job.skipped")
    roles = (event.detail or {}).get("roles") if event is not None else None
    if not isinstance(roles, Mapping):
        return []
    out = []
    for name, match in roles.items():
        found = isinstance(match, Mapping)
        out.append(Role(str(name), found, _text(match.get("series")) if found else None,
                        _text(match.get("description")) if found else None,
                        _text(match.get("acquisition_number")) if found else None))
    return out


def send_answers(events: Sequence[AuditEvent]) -> list[SendAnswer]:
    """The destination's answer to each send of the job (``send.*`` audit events)."""
    out = []
    for event in events:
        if not event.kind.startswith("send."):
            continue
        detail = event.detail or {}
        statuses = detail.get("statuses")
        out.append(SendAnswer(event.at, str(detail.get("destination", "")), str(detail.get("state", event.kind[5:])),
                              str(detail.get("attempts", "")), str(detail.get("reason") or event.message),
                              len(statuses) if isinstance(statuses, Mapping | list) else 0))
    return out


def study_page(database: Database, study_uid: str) -> StudyPage | None:
    """Everything the study page shows; None for an unknown study."""
    detail = study_detail(database, study_uid)
    if detail is None:
        return None
    events = audit_events(database, study_uid=study_uid)
    arrivals = {a.revision: a for a in detail.arrivals}
    results = lesion_results(database, [job.job_id for job in detail.jobs])
    jobs = []
    for job in detail.jobs:
        mine = [e for e in events if e.job_id == job.job_id]
        jobs.append(JobView(job, job_steps(mine, arrivals.get(job.study_revision)), job_roles(mine),
                            send_answers(mine), [r for r in results if r.job_id == job.job_id]))
    return StudyPage(detail, jobs, list(reversed(events)))


def failures(database: Database, *, limit: int = 500) -> list[FailureEvent]:
    """Failures and refusals, newest first."""
    return failure_events(database, FAILURE_KINDS, limit=limit)


def format_duration(delta: dt.timedelta | None) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``4.2 s``: the scale a person reads at a glance."""
    if delta is None:
        return ""
    seconds = delta.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
