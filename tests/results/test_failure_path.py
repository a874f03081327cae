"""One failure path for every runner: transient failures are tried again, everything else parks the job."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from sqlalchemy.exc import OperationalError

from db.engine import Database
from db.repository import Completion, InstanceRecord, Repository
from db.schema import Job, utcnow
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from db.vocabulary import CompletedBy
from tests.conftest import free_port
from tests.db.test_job_races import completed_job
from tests.factories import ct_dataset
from worker import jobs
from worker.embedded import OutboxRunner
from worker.errors import PermanentError, TransientError
from worker.grouping import load_rules
from worker.jobs import WorkerContext, run_step
from worker.results.writeback import Destination
from worker.retry import Attempt, RetryPolicy, retry_transient
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

UID = "1.2.826.0.1.3680043.8.498.77"


def _context(database: Database, tmp_path: Path, destinations: list[Destination] | None = None) -> WorkerContext:
    return WorkerContext(repository=Repository(database), rules=load_rules(), spool_root=tmp_path / "spool",
                         results_root=tmp_path / "results", destinations=destinations or [], models={},
                         calling_ae="TRIPHASE", data_dir=tmp_path, models_dir=tmp_path / "models", device="cpu")


def _job(repository: Repository) -> int:
    return completed_job(repository, uid=UID)


def _reason(database: Database, job_id: int) -> tuple[str, str | None]:
    with database.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state, job.reason


def test_retry_waits_the_policy_then_gives_up() -> None:
    waits: list[float] = []
    seen: list[Attempt] = []

    def flaky(attempt: Attempt) -> str:
        seen.append(attempt)
        raise TransientError("down")

    with pytest.raises(TransientError):
        retry_transient(flaky, RetryPolicy((1.0, 2.0)), sleep=waits.append)
    assert waits == [1.0, 2.0] and [a.number for a in seen] == [1, 2, 3] and seen[-1].last
    assert retry_transient(lambda attempt: attempt.number, RetryPolicy((5.0,)), sleep=waits.append) == 1


def test_an_unexpected_error_parks_the_job_with_its_type(sqlite_database: Database, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(sqlite_database, tmp_path)
    job_id = _job(ctx.repository)

    def broken(ctx: WorkerContext, job_id: int, attempt: Attempt) -> JobState:
        raise KeyError("roles")

    monkeypatch.setattr(jobs, "TASK_BODIES", {**jobs.TASK_BODIES, ANALYSE_TASK: broken})
    assert run_step(ANALYSE_TASK, ctx, job_id, Attempt(1, 6)) is JobState.FAILED
    assert _reason(sqlite_database, job_id) == ("failed", "triphase.analyse: KeyError: 'roles'")


def test_a_database_outage_is_transient_until_the_last_attempt(sqlite_database: Database, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _context(sqlite_database, tmp_path)
    job_id = _job(ctx.repository)

    def outage(ctx: WorkerContext, job_id: int, attempt: Attempt) -> JobState:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(jobs, "TASK_BODIES", {**jobs.TASK_BODIES, ANALYSE_TASK: outage})
    with pytest.raises(TransientError):
        run_step(ANALYSE_TASK, ctx, job_id, Attempt(1, 2))
    assert _reason(sqlite_database, job_id)[0] == "ready"
    assert run_step(ANALYSE_TASK, ctx, job_id, Attempt(2, 2)) is JobState.FAILED
    state, reason = _reason(sqlite_database, job_id)
    assert state == "failed" and reason is not None and reason.startswith("triphase.analyse: OperationalError")
    assert reason.endswith("(gave up after 2 attempts)")


def test_missing_results_are_permanent(sqlite_database: Database, tmp_path: Path) -> None:
    ctx = _context(sqlite_database, tmp_path, [Destination("pacs", "PACS", "127.0.0.1", free_port())])
    job_id = _job(ctx.repository)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.ANALYSED):
        ctx.repository.transition_job(job_id, state)
    with pytest.raises(PermanentError):
        jobs.run_send(ctx, job_id, Attempt(1, 4))
    assert run_step(SEND_TASK, ctx, job_id, Attempt(1, 4)) is JobState.FAILED
    assert _reason(sqlite_database, job_id) == ("failed", "no results on disk; analyse the study again")


def test_a_destination_down_is_sent_again_then_parked(sqlite_database: Database, tmp_path: Path) -> None:
    """The send step tries each destination once per attempt; the embedded runner waits in between."""
    ctx = _context(sqlite_database, tmp_path, [Destination("pacs", "PACS", "127.0.0.1", free_port())])
    job_id = _job(ctx.repository)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.ANALYSED):
        ctx.repository.transition_job(job_id, state)
    (tmp_path / "results" / str(job_id)).mkdir(parents=True)
    ct_dataset(UID, f"{UID}.1").save_as(tmp_path / "results" / str(job_id) / "SR.dcm", enforce_file_format=True)
    with pytest.raises(TransientError, match="pacs"):
        jobs.run_send(ctx, job_id, Attempt(1, 4))
    assert _reason(sqlite_database, job_id)[0] == "analysed"  # nothing audited or parked yet
    waits: list[float] = []
    runner = OutboxRunner(ctx, sleep=waits.append)
    assert runner.run_task(SEND_TASK, job_id) is JobState.FAILED
    assert waits == [2.0, 8.0, 30.0]
    state, reason = _reason(sqlite_database, job_id)
    assert state == "failed" and reason is not None and reason.endswith("(gave up after 4 attempts)")


@pytest.mark.parametrize("required", [True, False])
def test_a_study_without_annotation_is_not_analysed_on_a_guess_when_its_sender_requires_one(
        sqlite_database: Database, tmp_path: Path, required: bool) -> None:
    generate_run(tmp_path / "in", StudyOptions(task="ct-histology", seed=2, difficulty=0.3, slices=6, matrix=24,
                                                     extras=False), 1, [])
    spool = tmp_path / "spool"
    repository = Repository(sqlite_database)
    for path in sorted(next((tmp_path / "in").glob("study-*")).glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.Modality == "SEG":
            continue  # the annotation never came
        (spool / path.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, spool / path.name)
        repository.record_instance(InstanceRecord(
            study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID, sop_instance_uid=ds.SOPInstanceUID,
            sop_class_uid=ds.SOPClassUID, transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, path=path.name,
            size_bytes=1, sha256="0" * 64), quiet_period_s=0, hard_cap_s=60)
    [due] = repository.receiving_studies(utcnow())
    done = repository.complete_revision(due, Completion(CompletedBy.QUIET, annotation_required=required))
    assert done is not None
    state = jobs.run_analyse(_context(sqlite_database, tmp_path), done.job_id)
    reason = _reason(sqlite_database, done.job_id)[1] or ""
    assert state is JobState.SKIPPED  # with no model configured, the study goes no further either way
    assert ("require_annotation" in reason) is required and ("no model" in reason) is not required
