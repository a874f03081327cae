"""The audit database layer, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DatabaseError

from db.engine import Database
from db.queries import audit_events, list_studies
from db.repository import Completion, InstanceRecord, Repository, UIDConflict
from db.schema import AuditEvent, Instance, Job, OutboxEntry, Study, utcnow
from db.states import IllegalTransition, JobState
from db.vocabulary import AssociationResult, CompletedBy


def record(study: str = "1.2.3", series: str = "1.2.3.1", sop: str = "1.2.3.1.1", sha: str = "a" * 64,
           **kw: Any) -> InstanceRecord:
    return InstanceRecord(study_uid=study, series_uid=series, sop_instance_uid=sop,
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
                          path=f"{study}/{series}/{sop}.dcm", size_bytes=100, sha256=sha, **kw)


def count(database: Database, model: type) -> int:
    with database.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_record_instance_creates_study_series_instance(repository: Repository, database: Database) -> None:
    out = repository.record_instance(record(modality="CT", series_description="ART 35s"),
                                     quiet_period_s=30, hard_cap_s=3600)
    assert (out.replaced, out.reopened, out.study_revision) == (False, False, 1)
    repository.record_instance(record(sop="1.2.3.1.2"), quiet_period_s=30, hard_cap_s=3600)
    [summary] = list_studies(database)
    assert (summary.study_uid, summary.series, summary.instances, summary.state) == ("1.2.3", 1, 2, "receiving")


def test_resent_instance_keeps_one_row_and_is_audited(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=30, hard_cap_s=3600)
    out = repository.record_instance(record(sha="b" * 64), quiet_period_s=30, hard_cap_s=3600)
    assert out.replaced
    with database.session() as s:
        [row] = s.scalars(select(Instance)).all()
        assert (row.times_received, row.sha256) == (2, "b" * 64)
    [event] = audit_events(database, kind_prefix="instance.replaced")
    assert event.severity == "warning" and event.detail == {"times_received": 2, "identical": False}


def test_quiet_period_completes_once_with_job_and_outbox(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=30, hard_cap_s=3600)
    assert repository.complete_due_studies(utcnow()) == []
    later = utcnow() + dt.timedelta(seconds=31)
    [done] = repository.complete_due_studies(later)
    assert (done.study_uid, done.revision, done.completed_by) == ("1.2.3", 1, "quiet")
    assert repository.complete_due_studies(later) == []
    with database.session() as s:
        job = s.get(Job, done.job_id)
        assert job is not None and job.state == "ready"
        [outbox] = s.scalars(select(OutboxEntry)).all()
        assert (outbox.job_id, outbox.task_name, outbox.queue, outbox.published_at) == (
            done.job_id, "triphase.analyse", "arrival", None)
    assert [e.kind for e in audit_events(database, kind_prefix="study.")] == ["study.complete"]


def test_hard_cap_completes_a_study_that_never_goes_quiet(repository: Repository) -> None:
    repository.record_instance(record(), quiet_period_s=600, hard_cap_s=60)
    [done] = repository.complete_due_studies(utcnow() + dt.timedelta(seconds=61))
    assert done.completed_by == "cap"


def test_instances_after_completion_start_a_new_revision(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    first = repository.complete_study("1.2.3")
    assert first is not None and first.completed_by == "manual"
    assert repository.complete_study("1.2.3") is None  # already complete
    out = repository.record_instance(record(sop="1.2.3.1.9"), quiet_period_s=1, hard_cap_s=3600)
    assert out.reopened and out.study_revision == 2
    second = repository.complete_study("1.2.3")
    assert second is not None and second.revision == 2 and second.job_id != first.job_id
    assert count(database, Job) == 2
    assert len(audit_events(database, kind_prefix="study.reopened")) == 1


def test_complete_unknown_study_is_a_lookup_error(repository: Repository) -> None:
    with pytest.raises(LookupError):
        repository.complete_study("9.9.9")


def test_two_completers_race_one_job(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    with database.session() as s:
        study = s.scalars(select(Study)).one()
    assert repository._complete(study.id, 1, Completion(CompletedBy.QUIET)) is not None
    assert repository._complete(study.id, 1, Completion(CompletedBy.QUIET)) is None
    assert count(database, Job) == 1


def test_audit_trail_is_append_only(repository: Repository, database: Database) -> None:
    repository.audit("test.event", "hello")
    with pytest.raises(DatabaseError):
        with database.session() as s:
            s.execute(update(AuditEvent).values(message="changed"))
    with pytest.raises(DatabaseError):
        with database.session() as s:
            s.execute(delete(AuditEvent))
    [event] = audit_events(database, kind_prefix="test.")
    assert event.message == "hello"


def test_job_state_machine(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    done = repository.complete_study("1.2.3")
    assert done is not None
    with pytest.raises(IllegalTransition):
        repository.transition_job(done.job_id, JobState.SENT)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.ANALYSED, JobState.SENT, JobState.QUEUED):
        repository.transition_job(done.job_id, state)
    repository.transition_job(done.job_id, JobState.RUNNING)
    repository.transition_job(done.job_id, JobState.FAILED, reason="destination refused the SR")
    with database.session() as s:
        job = s.get(Job, done.job_id)
        assert job is not None and (job.state, job.reason) == ("failed", "destination refused the SR")
    kinds = [e.kind for e in audit_events(database, kind_prefix="job.")]
    assert kinds == ["job.ready", "job.queued", "job.running", "job.analysed", "job.sent", "job.queued",
                     "job.running", "job.failed"]


def test_outbox_publication_bookkeeping(repository: Repository) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    done = repository.complete_study("1.2.3")
    assert done is not None
    [(outbox_id, job_id, task, queue)] = repository.unpublished_outbox()
    assert job_id == done.job_id
    repository.mark_publish_failed(outbox_id, "broker down")
    assert len(repository.unpublished_outbox()) == 1
    repository.mark_published(outbox_id)
    assert repository.unpublished_outbox() == []


def test_associations_lifecycle(repository: Repository, database: Database) -> None:
    a = repository.open_association(calling_ae="PACS", called_ae="TRIPHASE", address="127.0.0.1", port=5000,
                                    peer_name="pacs")
    repository.close_association(a, result=AssociationResult.RELEASED, stored=3, failed=1, bytes_stored=300)
    repository.reject_association(calling_ae="EVIL", called_ae="TRIPHASE", address="127.0.0.2", port=1,
                                  reason="unknown")
    b = repository.open_association(calling_ae="PACS", called_ae="TRIPHASE", address="127.0.0.1", port=5001,
                                    peer_name="pacs")
    assert repository.close_interrupted_associations() == 1
    with database.session() as s:
        rows: dict[int, str] = {row.id: row.result for row in s.execute(text("SELECT id, result FROM associations"))}
    assert rows[a] == "released" and rows[b] == "interrupted" and sorted(rows.values()).count("rejected") == 1


def test_times_are_utc_aware(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    with database.session() as s:
        study = s.scalars(select(Study)).one()
    assert study.first_received_at.tzinfo is dt.UTC
    assert abs((utcnow() - study.first_received_at).total_seconds()) < 60


def test_each_instance_pushes_the_quiet_deadline(repository: Repository, database: Database) -> None:
    """The second instance takes the fast path; it must move the deadline like the first did."""
    repository.record_instance(record(), quiet_period_s=30, hard_cap_s=3600)
    repository.record_instance(record(sop="1.2.3.1.2", calling_ae="CT01"), quiet_period_s=600, hard_cap_s=3600)
    assert repository.complete_due_studies(utcnow() + dt.timedelta(seconds=31)) == []
    [summary] = list_studies(database)
    assert (summary.instances, summary.calling_ae) == (2, "CT01")
    with database.session() as s:
        revisions = {r.sop_instance_uid: r.study_revision for r in s.scalars(select(Instance))}
    assert revisions == {"1.2.3.1.1": 1, "1.2.3.1.2": 1}


def test_series_uid_reused_by_another_study_is_not_mixed_up(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=30, hard_cap_s=3600)
    with pytest.raises(UIDConflict):
        repository.record_instance(record(study="9.9", sop="9.9.1"), quiet_period_s=30, hard_cap_s=3600)
    assert [(s.study_uid, s.instances) for s in list_studies(database)] == [("1.2.3", 1)]


def test_resend_requeues_the_send_step(repository: Repository, database: Database) -> None:
    repository.record_instance(record(), quiet_period_s=1, hard_cap_s=3600)
    done = repository.complete_study("1.2.3")
    assert done is not None
    with pytest.raises(ValueError, match="only a sent, failed or analysed job"):
        repository.requeue_send(done.job_id)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.ANALYSED, JobState.SENT):
        repository.transition_job(done.job_id, state)
    repository.requeue_send(done.job_id)
    with database.session() as s:
        job = s.get(Job, done.job_id)
        assert job is not None and job.state == "queued"
    tasks = [task for _, job, task, _ in repository.unpublished_outbox() if job == done.job_id]
    assert tasks == ["triphase.analyse", "triphase.send"]
    with pytest.raises(LookupError):
        repository.requeue_send(999)


def test_completion_marks_shadow_studies_by_sender(repository: Repository, database: Database) -> None:
    repository.record_instance(record(calling_ae="TRIAL"), quiet_period_s=1, hard_cap_s=3600)
    repository.record_instance(record(study="7.7", series="7.7.1", sop="7.7.1.1", calling_ae="PACS"),
                               quiet_period_s=1, hard_cap_s=3600)
    done = repository.complete_due_studies(utcnow() + dt.timedelta(seconds=5), shadow_for=lambda ae: ae == "TRIAL")
    assert len(done) == 2
    with database.session() as s:
        shadows = {j.study.study_uid: j.shadow for j in s.scalars(select(Job))}
    assert shadows == {"1.2.3": True, "7.7": False}
