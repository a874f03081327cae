"""One task delivered twice (a redelivery, a republished row): one set of predictions, one send,
no failure. And a send that arrives before its analysis waits instead of failing the job."""

from __future__ import annotations

import functools
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.engine import Database
from db.migrate import upgrade
from db.queries import audit_events
from db.repository import Repository
from db.schema import Job, OutboxEntry, Prediction
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from node.folder_store import FolderStore
from node.spool import Spool
from tests.concurrency import at_once
from tests.db.test_job_races import LESION
from tests.results.test_failure_path import _context, _job
from worker.batch import import_folder
from worker.errors import TransientError
from worker.grouping import load_rules
from worker.jobs import WorkerContext, run_step
from worker.results.writeback import Destination
from worker.retry import TASK_RETRIES, Attempt


def _pipeline(database: Database, tmp_path: Path, artifact: object, pacs: FolderStore) -> WorkerContext:
    """A worker process's context of its own (own engine), as each pool process has."""
    return WorkerContext(repository=Repository(Database(database.url)), rules=load_rules(),
                         spool_root=tmp_path / "spool", results_root=tmp_path / "results",
                         destinations=[Destination("pacs", "DEMOPACS", "127.0.0.1", pacs.port)],
                         models={"mri-ehcc": str(artifact.path)}, calling_ae="TRIPHASE",  # type: ignore[attr-defined]
                         data_dir=tmp_path, models_dir=tmp_path / "models", device="cpu")


def _deliver_at_once(task_name: str, contexts: list[WorkerContext], job_id: int) -> list[JobState]:
    """The task delivered to every context at the same moment, each retried as Celery would."""
    policy = TASK_RETRIES[task_name]

    def deliver(ctx: WorkerContext) -> JobState:
        for number in range(1, policy.attempts + 1):
            try:
                return run_step(task_name, ctx, job_id, policy.attempt(number))
            except TransientError:  # another delivery holds the job: Celery retries after a countdown
                time.sleep(policy.delay_after(policy.attempt(number)) / 5)
        raise AssertionError(f"{task_name} still held by another delivery after {policy.attempts} attempts")

    return at_once([functools.partial(deliver, ctx) for ctx in contexts], join_s=240)


@pytest.mark.timeout(300)
def test_analyse_and_send_delivered_twice_make_one_result_and_one_send(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("mri-ehcc")
    pacs = FolderStore(tmp_path / "pacs").start()
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}")
    upgrade(database)
    contexts = [_pipeline(database, tmp_path, artifact, pacs) for _ in range(2)]
    try:
        repository = Repository(database)
        import_folder([sorted(studies.glob("study-*"))[0]], Spool(tmp_path / "spool"), repository)
        [published] = repository.claim_outbox("node:1")
        repository.mark_published(published.outbox_id)
        job_id = published.job_id

        assert sorted(_deliver_at_once(ANALYSE_TASK, contexts, job_id)) == [JobState.ANALYSED] * 2
        with database.session() as session:
            assert session.scalar(select(func.count()).select_from(Prediction)) == 1  # one lesion, one row
            assert len(session.scalars(select(OutboxEntry).where(OutboxEntry.task_name == SEND_TASK)).all()) == 1

        for ctx in contexts:  # the send delivered twice, the second after the first
            assert run_step(SEND_TASK, ctx, job_id, Attempt(1, 4)) is JobState.SENT
        assert len(pacs.received) == 2  # one SR and one SC, sent once
        kinds = Counter(e.kind for e in audit_events(database))
        assert (kinds["job.analysed"], kinds["job.sent"], kinds["send.sent"], kinds["job.failed"]) == (1, 1, 1, 0)
    finally:
        pacs.stop()
        for ctx in contexts:
            ctx.repository.db.close()
        database.close()


def test_a_send_that_comes_before_its_analysis_waits_and_never_fails_the_job(sqlite_database: Database,
                                                                             tmp_path: Path) -> None:
    ctx = _context(sqlite_database, tmp_path, [Destination("pacs", "PACS", "127.0.0.1", 1)])
    job_id = _job(ctx.repository)
    ctx.repository.transition_job(job_id, JobState.QUEUED, expected=JobState.READY)
    with pytest.raises(TransientError, match="not analysed yet"):
        run_step(SEND_TASK, ctx, job_id, Attempt(1, 4))  # Celery retries it after the countdown
    ctx.repository.transition_job(job_id, JobState.RUNNING, expected=JobState.QUEUED)
    assert run_step(SEND_TASK, ctx, job_id, Attempt(4, 4)) is JobState.RUNNING  # left to the analysis
    with sqlite_database.session() as session:
        assert session.scalars(select(Job.state)).one() == "running"
    assert audit_events(sqlite_database, kind_prefix="job.failed") == []


def test_late_duplicates_of_finished_steps_do_nothing(sqlite_database: Database, tmp_path: Path) -> None:
    ctx = _context(sqlite_database, tmp_path, [Destination("pacs", "PACS", "127.0.0.1", 1)])
    job_id = _job(ctx.repository)
    for state in (JobState.QUEUED, JobState.RUNNING):
        ctx.repository.transition_job(job_id, state)
    ctx.repository.record_analysis(job_id, task="ct-histology", model="m" * 64, lesions=[LESION])
    ctx.repository.transition_job(job_id, JobState.SENT, expected=JobState.ANALYSED)
    events = len(audit_events(sqlite_database))
    assert run_step(SEND_TASK, ctx, job_id, Attempt(1, 4)) is JobState.SENT  # no destination is tried
    assert run_step(ANALYSE_TASK, ctx, job_id, Attempt(1, 6)) is JobState.SENT
    ctx.repository.requeue_send(job_id)  # a resend waits in queued: the analysis is still done
    assert run_step(ANALYSE_TASK, ctx, job_id, Attempt(1, 6)) is JobState.QUEUED
    assert len(audit_events(sqlite_database)) == events + 1  # the resend's own event, nothing else
