"""Study completion: the conditional update that completes a revision exactly once, and its job.

Completing a study, creating its job and queueing the job's first task happen in one transaction
(the outbox row is published only after it commits), so a crash can lose none of them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.repository.base import RepositoryBase, add_event, study_uid_of
from db.schema import Instance, Job, OutboxEntry, Series, Study, utcnow
from db.states import JobState, StudyState
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE
from db.vocabulary import CompletedBy, Severity


@dataclass(frozen=True)
class CompletedStudy:
    study_id: int
    study_uid: str
    revision: int
    job_id: int
    completed_by: CompletedBy


def _audit_completion(session: Session, study_id: int, study_uid: str, revision: int, by: CompletedBy,
                      job_id: int, *, queue: str, shadow: bool) -> None:
    series, instances = session.execute(
        select(func.count(func.distinct(Series.id)), func.count(Instance.id))
        .select_from(Series).join(Instance, isouter=True).where(Series.study_id == study_id)
    ).one()
    add_event(session, "study.complete", f"by {by}: {series} series, {instances} instances",
              study_uid=study_uid, job_id=job_id,
              detail={"revision": revision, "by": by, "series": series, "instances": instances})
    add_event(session, "job.ready", "waiting to be published" + (" (shadow run)" if shadow else ""),
              study_uid=study_uid, job_id=job_id, detail={"shadow": shadow, "queue": queue})


class StudyCompletion(RepositoryBase):
    def complete_due_studies(self, now: dt.datetime | None = None, *,
                             shadow_for: Callable[[str | None], bool] | None = None) -> list[CompletedStudy]:
        """Complete every receiving study whose quiet period or hard cap has passed.

        ``shadow_for(calling AE)`` says whether studies from that sender are shadow runs.
        """
        now = now or utcnow()
        with self.db.session() as session:
            due = session.execute(
                select(Study.id, Study.revision, Study.quiet_deadline, Study.calling_ae).where(
                    Study.state == StudyState.RECEIVING.value,
                    (Study.quiet_deadline <= now) | (Study.hard_deadline <= now),
                )
            ).all()
        done: list[CompletedStudy] = []
        for study_id, revision, quiet_deadline, calling_ae in due:
            by = CompletedBy.QUIET if quiet_deadline <= now else CompletedBy.CAP
            shadow = bool(shadow_for(calling_ae)) if shadow_for else False
            completed = self._complete(study_id, revision, by, shadow=shadow)
            if completed:
                done.append(completed)
        return done

    def renew_receiving_deadlines(self, *, quiet_period_s: float, now: dt.datetime | None = None) -> int:
        """At start-up: studies still receiving get a quiet deadline counted from now, and a hard cap
        no earlier than that, so downtime never completes a study whose senders could not resend."""
        now = now or utcnow()
        quiet = now + dt.timedelta(seconds=quiet_period_s)
        with self.db.session() as session:
            studies = session.scalars(
                select(Study).where(Study.state == StudyState.RECEIVING.value).with_for_update()).all()
            for study in studies:
                old_quiet, old_cap = study.quiet_deadline, study.hard_deadline
                study.quiet_deadline = quiet
                study.hard_deadline = max(old_cap, quiet)
                add_event(session, "study.deadline_renewed", "node restarted while the study was receiving",
                          severity=Severity.WARNING, study_uid=study.study_uid,
                          detail={"old_quiet_deadline": old_quiet.isoformat(), "quiet_deadline": quiet.isoformat(),
                                  "old_hard_deadline": old_cap.isoformat(),
                                  "hard_deadline": study.hard_deadline.isoformat()})
            return len(studies)

    def complete_study(self, study_uid: str, *, by: CompletedBy = CompletedBy.MANUAL, queue: str = ARRIVAL_QUEUE,
                       shadow: bool = False) -> CompletedStudy | None:
        """Force completion (``triphase studies complete``); None if already complete."""
        with self.db.session() as session:
            row = session.execute(select(Study.id, Study.revision, Study.state)
                                  .where(Study.study_uid == study_uid)).one_or_none()
        if row is None:
            raise LookupError("no such study")
        if row.state == StudyState.COMPLETE.value:
            return None
        return self._complete(row.id, row.revision, by, queue, shadow=shadow)

    def _complete(self, study_id: int, revision: int, by: CompletedBy, queue: str = ARRIVAL_QUEUE, *,
                  shadow: bool = False) -> CompletedStudy | None:
        """Complete one revision; the conditional UPDATE makes this safe with several nodes."""
        with self.db.session() as session:
            changed = session.execute(
                update(Study)
                .where(Study.id == study_id, Study.revision == revision,
                       Study.state == StudyState.RECEIVING.value)
                .values(state=StudyState.COMPLETE.value, completed_at=utcnow(), completed_by=by)
                .returning(Study.id)
            ).first()
            if changed is None:
                return None
            study_uid = study_uid_of(session, study_id)
            job = Job(study_id=study_id, study_revision=revision, state=JobState.READY.value, shadow=shadow)
            session.add(job)
            session.flush()
            session.add(OutboxEntry(job_id=job.id, task_name=ANALYSE_TASK, queue=queue))
            _audit_completion(session, study_id, study_uid, revision, by, job.id, queue=queue, shadow=shadow)
            return CompletedStudy(study_id, study_uid, revision, job.id, by)
