"""Study completion: the conditional update that completes a revision exactly once, and its job.

Completing a study, creating its job and queueing the job's first task happen in one transaction
(the outbox row is published only after it commits), so a crash can lose none of them. A study
completed without a role its task requires gets a job that is skipped at once, with the missing
roles named, and no task: it is never analysed on a guess.

Which rule completes a study is decided by the node (:mod:`node.completion`); this module offers
it the receiving studies that are due or settled, the files and SOP classes of one study, and the
completion itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.repository.base import RepositoryBase, add_event, study_uid_of
from db.schema import Instance, Job, OutboxEntry, Series, Study, utcnow
from db.states import JobState, StudyState, check_transition
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE
from db.vocabulary import CompletedBy, Severity


@dataclass(frozen=True)
class CompletedStudy:
    study_id: int
    study_uid: str
    revision: int
    job_id: int
    completed_by: CompletedBy
    skipped: str | None = None  # the job was skipped at completion (a required role missing): no task queued


@dataclass(frozen=True)
class ReceivingStudy:
    """A receiving study the completion rules look at: due by the quiet period or the cap, or settled."""

    study_id: int
    study_uid: str
    revision: int
    calling_ae: str | None
    last_received_at: dt.datetime
    due: CompletedBy | None  # QUIET or CAP when a deadline has passed; None when only settled


@dataclass(frozen=True)
class StudyFile:
    """One stored instance of a study: its spool-relative path and SOP class."""

    path: str
    sop_class_uid: str


@dataclass(frozen=True)
class Completion:
    """How to complete one revision: the rule, and what its job carries.

    ``skip_reason`` makes the job skipped at once (no task); ``detail`` goes into the audit event
    (e.g. the roles found, or those missing).
    """

    by: CompletedBy
    shadow: bool = False
    annotation_required: bool = False
    skip_reason: str | None = None
    detail: dict[str, object] | None = None


def _audit_completion(session: Session, study_id: int, study_uid: str, revision: int, completion: Completion,
                      job_id: int, *, queue: str) -> None:
    series, instances = session.execute(
        select(func.count(func.distinct(Series.id)), func.count(Instance.id))
        .select_from(Series).join(Instance, isouter=True).where(Series.study_id == study_id)
    ).one()
    by, shadow = completion.by, completion.shadow
    add_event(session, "study.complete", f"by {by}: {series} series, {instances} instances",
              study_uid=study_uid, job_id=job_id,
              detail={"revision": revision, "by": by, "series": series, "instances": instances,
                      **(completion.detail or {})})
    if completion.skip_reason is not None:
        add_event(session, "job.skipped", completion.skip_reason, severity=Severity.WARNING, study_uid=study_uid,
                  job_id=job_id, detail={"from": JobState.READY.value, **(completion.detail or {})})
        return
    add_event(session, "job.ready", "waiting to be published" + (" (shadow run)" if shadow else ""),
              study_uid=study_uid, job_id=job_id,
              detail={"shadow": shadow, "queue": queue, "annotation_required": completion.annotation_required})


class StudyCompletion(RepositoryBase):
    def receiving_studies(self, now: dt.datetime, *, settle_s: float | None = None) -> list[ReceivingStudy]:
        """Receiving studies that are due (quiet period or hard cap passed) or, with ``settle_s``,
        settled (nothing received for that long), oldest activity first."""
        condition = (Study.quiet_deadline <= now) | (Study.hard_deadline <= now)
        if settle_s is not None:
            condition = condition | (Study.last_received_at <= now - dt.timedelta(seconds=settle_s))
        with self.db.session() as session:
            rows = session.execute(
                select(Study.id, Study.study_uid, Study.revision, Study.calling_ae, Study.last_received_at,
                       Study.quiet_deadline, Study.hard_deadline)
                .where(Study.state == StudyState.RECEIVING.value, condition)
                .order_by(Study.last_received_at)
            ).all()
        return [ReceivingStudy(r.id, r.study_uid, r.revision, r.calling_ae, r.last_received_at,
                               CompletedBy.QUIET if r.quiet_deadline <= now
                               else CompletedBy.CAP if r.hard_deadline <= now else None)
                for r in rows]

    def study_files(self, study_id: int) -> list[StudyFile]:
        """Every stored instance of a study (what the role check reads)."""
        with self.db.session() as session:
            rows = session.execute(select(Instance.path, Instance.sop_class_uid).join(Series)
                                   .where(Series.study_id == study_id).order_by(Instance.id)).all()
        return [StudyFile(r.path, r.sop_class_uid) for r in rows]

    def complete_revision(self, study: ReceivingStudy, completion: Completion) -> CompletedStudy | None:
        """Complete one receiving revision by ``completion``; None if it was completed meanwhile.

        Completion by roles was decided on the instances seen then: it also returns None when
        another instance arrived since (the rules look again once that one has settled).
        """
        unchanged = study.last_received_at if completion.by is CompletedBy.ROLES else None
        return self._complete(study.study_id, study.revision, completion, unchanged_since=unchanged)

    def complete_due_studies(self, now: dt.datetime | None = None, *,
                             shadow_for: Callable[[str | None], bool] | None = None) -> list[CompletedStudy]:
        """Complete every receiving study whose quiet period or hard cap has passed (no role check).

        ``shadow_for(calling AE)`` says whether studies from that sender are shadow runs.
        """
        now = now or utcnow()
        done: list[CompletedStudy] = []
        for study in self.receiving_studies(now):
            if study.due is None:
                continue
            shadow = bool(shadow_for(study.calling_ae)) if shadow_for else False
            completed = self.complete_revision(study, Completion(study.due, shadow=shadow))
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
        return self._complete(row.id, row.revision, Completion(by, shadow=shadow), queue)

    def _complete(self, study_id: int, revision: int, completion: Completion, queue: str = ARRIVAL_QUEUE, *,
                  unchanged_since: dt.datetime | None = None) -> CompletedStudy | None:
        """Complete one revision; the conditional UPDATE makes this safe with several nodes."""
        by = completion.by
        conditions = [Study.id == study_id, Study.revision == revision, Study.state == StudyState.RECEIVING.value]
        if unchanged_since is not None:
            conditions.append(Study.last_received_at == unchanged_since)
        with self.db.session() as session:
            changed = session.execute(
                update(Study)
                .where(*conditions)
                .values(state=StudyState.COMPLETE.value, completed_at=utcnow(), completed_by=by)
                .returning(Study.id)
            ).first()
            if changed is None:
                return None
            study_uid = study_uid_of(session, study_id)
            skipped = completion.skip_reason
            state = check_transition(JobState.READY, JobState.SKIPPED) if skipped is not None else JobState.READY
            job = Job(study_id=study_id, study_revision=revision, state=state.value, shadow=completion.shadow,
                      annotation_required=completion.annotation_required, reason=skipped)
            session.add(job)
            session.flush()
            if skipped is None:
                session.add(OutboxEntry(job_id=job.id, task_name=ANALYSE_TASK, queue=queue))
            _audit_completion(session, study_id, study_uid, revision, completion, job.id, queue=queue)
            return CompletedStudy(study_id, study_uid, revision, job.id, by, skipped)
