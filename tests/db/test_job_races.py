"""Compare-and-set job moves and outbox claims, on SQLite and PostgreSQL, with real concurrency.

Each racing thread has its own engine (as separate processes would), and starts at a barrier.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import func, select, update

from db.engine import Database
from db.queries import audit_events
from db.records import LesionPrediction
from db.repository import InstanceRecord, Repository
from db.schema import Job, OutboxEntry, Prediction, utcnow
from db.states import IllegalTransition, JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from node.dispatch import publish_pending
from tests.concurrency import at_once

T = TypeVar("T")
LESION = LesionPrediction(lesion_id="L1", label="early_hcc", top_class="early_hcc",
                          probabilities={"early_hcc": 0.7, "progressed_hcc": 0.3}, roi_source="seg", slice_index=3)


def completed_job(repository: Repository, n: int = 0, *, uid: str | None = None) -> int:
    """A completed study's job (``ready``) with its ``triphase.analyse`` row in the outbox."""
    uid = uid or f"1.2.826.0.1.3680043.8.498.5{n}"
    repository.record_instance(InstanceRecord(
        study_uid=uid, series_uid=f"{uid}.1", sop_instance_uid=f"{uid}.1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"{uid}/x.dcm", size_bytes=1, sha256="0" * 64),
        quiet_period_s=0, hard_cap_s=60)
    done = repository.complete_study(uid)
    assert done is not None
    return done.job_id


def state_of(database: Database, job_id: int) -> str:
    with database.session() as session:
        return session.scalars(select(Job.state).where(Job.id == job_id)).one()


def race(database: Database, threads: int, work: Callable[[Repository], T]) -> list[T]:
    """``work`` in ``threads`` threads at once, each with an engine of its own; their results."""
    engines = [Database(database.url) for _ in range(threads)]
    try:
        return at_once([functools.partial(work, Repository(engine)) for engine in engines])
    finally:
        for engine in engines:
            engine.close()


def test_of_many_racing_moves_exactly_one_wins(repository: Repository, database: Database) -> None:
    job = completed_job(repository)
    assert repository.transition_job(job, JobState.QUEUED, expected=JobState.READY)
    wins = race(database, 6, lambda repo: repo.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED))
    assert sorted(wins) == [False] * 5 + [True]
    assert state_of(database, job) == "running"
    assert [e.kind for e in audit_events(database, kind_prefix="job.")] == ["job.ready", "job.queued", "job.running"]


def test_a_lost_race_is_reported_and_a_forbidden_move_raised(repository: Repository, database: Database) -> None:
    job = completed_job(repository)
    assert not repository.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED)  # it is ready
    assert state_of(database, job) == "ready"
    with pytest.raises(IllegalTransition):  # checked against the expected state, whatever the job's is
        repository.transition_job(job, JobState.SENT, expected=JobState.QUEUED)
    with pytest.raises(IllegalTransition):  # a publisher can no longer move a running job back
        repository.transition_job(job, JobState.QUEUED, expected=JobState.RUNNING)
    with pytest.raises(LookupError):
        repository.transition_job(999, JobState.QUEUED, expected=JobState.READY)
    assert [e.kind for e in audit_events(database, kind_prefix="job.")] == ["job.ready"]


def test_analysis_is_recorded_once_and_only_from_running(repository: Repository, database: Database) -> None:
    job = completed_job(repository)
    record = {"task": "mri-ehcc", "model": "m" * 64, "lesions": [LESION], "enqueue_send": True}
    assert not repository.record_analysis(job, **record)  # ready: nothing written
    repository.transition_job(job, JobState.QUEUED, expected=JobState.READY)
    repository.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED)
    wins = race(database, 4, lambda repo: repo.record_analysis(job, **record))
    assert sorted(wins) == [False, False, False, True]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 1
        sends = session.scalars(select(OutboxEntry.id).where(OutboxEntry.task_name == SEND_TASK)).all()
    assert len(sends) == 1 and state_of(database, job) == "analysed"
    assert not repository.record_analysis(job, **record)  # a late duplicate


def test_claims_split_the_outbox_between_racing_publishers(repository: Repository, database: Database) -> None:
    jobs = [completed_job(repository, n) for n in range(24)]

    def claim_all(repo: Repository) -> list[int]:
        mine: list[int] = []
        while batch := repo.claim_outbox(f"test:{threading.get_ident()}", limit=3):
            mine += [task.outbox_id for task in batch]
        return mine

    claims = race(database, 4, claim_all)
    everything = sorted(row for mine in claims for row in mine)
    assert len(everything) == len(set(everything)) == len(jobs)  # each row claimed once, none left out
    assert repository.claim_outbox("late:1") == []


def test_a_claim_is_a_lease_and_the_sweeper_waits_out_a_grace(repository: Repository, database: Database) -> None:
    completed_job(repository)
    assert repository.claim_outbox("sweeper:1", grace_s=5.0) == []  # fresh and unclaimed: its publisher's
    [task] = repository.claim_outbox("node:1")
    assert repository.claim_outbox("sweeper:1", grace_s=0.0) == []  # claimed by the node until its lease ends
    with database.session() as session:  # the node died: its lease ran out
        session.execute(update(OutboxEntry).values(claimed_until=utcnow()))
    assert [t.outbox_id for t in repository.claim_outbox("sweeper:1", grace_s=5.0)] == [task.outbox_id]
    with database.session() as session:
        row = session.get(OutboxEntry, task.outbox_id)
        assert row is not None and row.claimed_by == "sweeper:1" and row.published_at is None


def test_publishing_moves_a_job_only_from_ready_to_queued(repository: Repository, database: Database) -> None:
    job = completed_job(repository)
    [analyse] = repository.claim_outbox("node:1")
    assert repository.mark_published(analyse.outbox_id)
    assert state_of(database, job) == "queued"
    assert not repository.mark_published(analyse.outbox_id)  # marked once
    repository.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED)
    assert repository.record_analysis(job, task="mri-ehcc", model="m" * 64, lesions=[LESION], enqueue_send=True)
    [send] = repository.claim_outbox("pool:1", job_ids=[job])
    assert send.task_name == SEND_TASK
    assert repository.mark_published(send.outbox_id)
    assert state_of(database, job) == "analysed"  # the send's publication leaves the job where it is
    with database.session() as session:  # a duplicate analyse row, published while the job runs on
        session.add(OutboxEntry(job_id=job, task_name=ANALYSE_TASK, queue="arrival"))
    [again] = repository.claim_outbox("sweeper:1", grace_s=0.0)
    assert repository.mark_published(again.outbox_id) and state_of(database, job) == "analysed"
    assert [e.kind for e in audit_events(database, kind_prefix="job.")] == ["job.ready", "job.queued",
                                                                              "job.running", "job.analysed"]


def test_a_broker_failure_releases_every_claim(repository: Repository, database: Database) -> None:
    for n in range(3):
        completed_job(repository, n)

    def broker_down(name: str, job_id: int, queue: str) -> None:
        raise ConnectionRefusedError("broker down")

    assert publish_pending(repository, broker_down) == 0
    with database.session() as session:
        rows = session.execute(select(OutboxEntry.last_error, OutboxEntry.published_at)
                               .order_by(OutboxEntry.id)).all()
    assert [r.published_at for r in rows] == [None] * 3
    assert rows[0].last_error == "ConnectionRefusedError: broker down"
    assert len(repository.claim_outbox("sweeper:1", grace_s=5.0)) == 3  # all free again, at once
