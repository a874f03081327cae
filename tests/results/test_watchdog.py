"""The watchdog on a real Redis: a job whose task the broker lost is re-driven, once a lease; a job
whose task waits in a queue, or was delivered and not acknowledged, is left alone."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import select, update

from db.engine import Database
from db.queries import audit_events
from db.repository import Repository
from db.schema import Job, OutboxEntry, utcnow
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from node.scu import RemoteNode, SendResult, scan, send
from tests.db.test_job_races import LESION, completed_job
from tests.results.conftest import pipeline, wait_for_job_state
from tests.results.test_broker_outage import PrivateRedis
from worker.celery_app import create_app, publish_outbox
from worker.watchdog import Watchdog, broker_job_ids

pytestmark = pytest.mark.interop

LEASE_S = 900.0


@pytest.fixture
def broker(tmp_path: Path) -> PrivateRedis:
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis  # type: ignore[misc]
    redis.kill()


def _app(tmp_path: Path, broker: PrivateRedis) -> Celery:
    config = tmp_path / "triphase.toml"
    config.write_text(f'[broker]\nurl = "redis://127.0.0.1:{broker.port}/0"\n')
    return create_app(config)


def _age(database: Database, seconds: float) -> None:
    """Everything that happened so far happened ``seconds`` ago."""
    then = utcnow() - dt.timedelta(seconds=seconds)
    with database.session() as session:
        session.execute(update(Job).values(updated_at=then))
        session.execute(update(OutboxEntry).values(created_at=then, published_at=then))


def test_a_job_whose_task_the_broker_lost_is_redriven(repository: Repository, database: Database,
                                                      broker: PrivateRedis, tmp_path: Path) -> None:
    app = _app(tmp_path, broker)
    job = completed_job(repository)
    assert publish_outbox(app, repository) == 1
    _age(database, LEASE_S + 100)
    watchdog = Watchdog(repository, LEASE_S, lambda: broker_job_ids(app))
    assert broker_job_ids(app) == {job}
    assert watchdog.check() == []  # its task waits in the queue
    with app.connection_for_read() as connection:  # a worker takes it and has not acknowledged it yet
        assert connection.default_channel.basic_get("arrival", no_ack=False) is not None
    assert broker_job_ids(app) == {job}
    assert watchdog.check() == []
    subprocess.run(["redis-cli", "-p", str(broker.port), "flushall"], check=True, capture_output=True)
    assert watchdog.check() == [job]  # nothing anywhere: driven again
    [event] = audit_events(database, kind_prefix="job.redriven")
    assert event.job_id == job and event.detail is not None
    assert (event.detail["state"], event.detail["task"], event.detail["queue"]) == ("queued", ANALYSE_TASK, "arrival")
    assert watchdog.check() == []  # once a lease
    assert publish_outbox(app, repository, job_ids=[job]) == 1
    assert broker_job_ids(app) == {job}
    with database.session() as session:
        assert session.scalars(select(Job.state)).one() == "queued"  # a re-drive moves no job


def test_the_step_redriven_is_the_one_the_job_waits_for(repository: Repository, database: Database) -> None:
    queued, analysed, resending, done, fresh = (completed_job(repository, n) for n in range(5))
    for job in (queued, analysed, resending, done):
        [task] = repository.claim_outbox("node:1", job_ids=[job])
        repository.mark_published(task.outbox_id)
    for job in (analysed, resending, done):
        repository.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED)
        repository.record_analysis(job, task="mri-ehcc", model="m" * 64, lesions=[LESION])
    repository.transition_job(done, JobState.SENT, expected=JobState.ANALYSED)
    repository.transition_job(resending, JobState.SENT, expected=JobState.ANALYSED)
    repository.requeue_send(resending)
    for task in repository.claim_outbox("node:1", job_ids=[resending]):
        repository.mark_published(task.outbox_id)
    _age(database, LEASE_S + 100)
    stale = {job.job_id: (job.state, job.task_name) for job in repository.stale_jobs(LEASE_S)}
    # ``fresh`` still has its analyse row to publish (the sweeper's), ``done`` waits for nothing
    assert stale == {queued: (JobState.QUEUED, ANALYSE_TASK), analysed: (JobState.ANALYSED, SEND_TASK),
                     resending: (JobState.QUEUED, SEND_TASK)}
    assert fresh not in stale
    assert sorted(Watchdog(repository, LEASE_S, lambda: {queued}).check()) == sorted([analysed, resending])
    assert [job.job_id for job in repository.stale_jobs(LEASE_S)] == [queued]  # the others: once a lease


def test_an_unreadable_broker_redrives_nothing(repository: Repository, database: Database,
                                               broker: PrivateRedis, tmp_path: Path) -> None:
    app = _app(tmp_path, broker)
    completed_job(repository)
    assert publish_outbox(app, repository) == 1
    _age(database, LEASE_S + 100)
    broker.kill()
    assert broker_job_ids(app) is None
    assert Watchdog(repository, LEASE_S, lambda: broker_job_ids(app)).check() == []
    assert audit_events(database, kind_prefix="job.redriven") == []


@pytest.mark.timeout(300)
def test_the_worker_redrives_a_job_the_broker_lost(trained, tmp_path: Path) -> None:
    """A real node publishes; Redis loses the message before any worker runs; ``triphase worker``'s
    watchdog (lease 3 s here) drives the job again and it is analysed and sent."""
    studies, artifact, _ = trained("ct-histology")
    with pipeline(tmp_path, artifact, completion_poll_s=0.1) as rig:
        node, broker, pacs = rig.node, rig.broker, rig.pacs
        node.extra_toml = "[worker]\njob_lease_s = 3\n" + node.extra_toml
        node.start()
        database = rig.database
        result = SendResult()
        send(scan([sorted(studies.glob("study-*"))[0]], result), RemoteNode("TRIPHASE", "127.0.0.1", node.port),
             calling_ae="SENDER", result=result)
        assert wait_for_job_state(database, {"queued"}, 60) == "queued"  # published by the node
        subprocess.run(["redis-cli", "-p", str(broker.port), "flushall"], check=True, capture_output=True)
        rig.start_worker()
        state = wait_for_job_state(database, {"sent", "failed", "skipped"}, 180, poll_s=0.5)
        assert state == "sent", (tmp_path / "worker.log").read_text()[-3000:]
        [event] = audit_events(database, kind_prefix="job.redriven")
        assert event.detail is not None and event.detail["task"] == ANALYSE_TASK
        assert len(pacs.received) == 2  # one SR, one SC
