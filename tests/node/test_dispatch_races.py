"""The sweeper against the publishers, on SQLite and PostgreSQL: what a user met with
``--sweep-s 0.1`` (a send republished while it ran, its job moved back to queued, then failed).

Publishers here hand tasks to an in-memory queue that "pool" threads work off as the real task
bodies move jobs (compare-and-set, one engine per thread); a sweeper thread sweeps without any
grace all the while, the most aggressive setting there is.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter

from sqlalchemy import select

from db.engine import Database
from db.queries import audit_events
from db.repository import Repository
from db.schema import OutboxEntry
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from node.dispatch import publish_pending
from tests.db.test_job_races import LESION, completed_job, state_of

Message = tuple[str, int, str]


class Broker:
    """Records every task handed over, and lets pool threads take them in order."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.messages: queue.Queue[Message] = queue.Queue()
        self._lock = threading.Lock()

    def send(self, name: str, job_id: int, queue_name: str) -> None:
        with self._lock:
            self.sent.append((name, job_id, queue_name))
        self.messages.put((name, job_id, queue_name))


def _pool_step(repository: Repository, broker: Broker, name: str, job_id: int) -> None:
    """What the task bodies do to the job (worker/jobs.py), without the images."""
    if name == ANALYSE_TASK:
        repository.transition_job(job_id, JobState.QUEUED, expected=JobState.READY)
        if repository.transition_job(job_id, JobState.RUNNING, expected=JobState.QUEUED):
            repository.record_analysis(job_id, task="mri-ehcc", model="m" * 64, lesions=[LESION], enqueue_send=True)
            publish_pending(repository, broker.send, job_ids=[job_id])  # its send, at once
    else:
        repository.transition_job(job_id, JobState.SENT, expected=JobState.ANALYSED, reason="sent to pacs")


def _run_pool(database: Database, broker: Broker, stop: threading.Event, errors: list[BaseException]) -> None:
    engine = Database(database.url)
    repository = Repository(engine)
    try:
        while not stop.is_set():
            try:
                name, job_id, _ = broker.messages.get(timeout=0.05)
            except queue.Empty:
                continue
            _pool_step(repository, broker, name, job_id)
    except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails on it
        errors.append(exc)
    finally:
        engine.close()


def _run_sweeper(database: Database, broker: Broker, stop: threading.Event, errors: list[BaseException]) -> None:
    engine = Database(database.url)
    try:
        while not stop.is_set():
            publish_pending(Repository(engine), broker.send, grace_s=0.0)
    except BaseException as exc:  # noqa: BLE001 - likewise
        errors.append(exc)
    finally:
        engine.close()


def test_the_sweeper_never_publishes_twice_nor_moves_a_job_back(repository: Repository, database: Database) -> None:
    broker, stop, errors = Broker(), threading.Event(), []
    threads = [threading.Thread(target=_run_sweeper, args=(database, broker, stop, errors))]
    threads += [threading.Thread(target=_run_pool, args=(database, broker, stop, errors)) for _ in range(3)]
    for thread in threads:
        thread.start()
    jobs = []
    try:
        for n in range(16):  # the node: complete a study, publish at once
            jobs.append(completed_job(repository, n))
            publish_pending(repository, broker.send)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(state_of(database, job) != "sent" for job in jobs):
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors, errors
    assert {job: state_of(database, job) for job in jobs} == dict.fromkeys(jobs, "sent")
    assert sorted(Counter(broker.sent).values()) == [1] * 2 * len(jobs)  # each task published exactly once
    with database.session() as session:
        assert session.scalars(select(OutboxEntry).where(OutboxEntry.published_at.is_(None))).all() == []
    kinds = Counter((e.job_id, e.kind) for e in audit_events(database, kind_prefix="job."))
    for job in jobs:
        assert [kinds[(job, f"job.{s}")] for s in ("ready", "queued", "running", "analysed", "sent")] == [1] * 5


def test_a_row_claimed_by_its_publisher_is_not_the_sweepers(repository: Repository, database: Database) -> None:
    """The reported interleaving, step by step: the send row committed, then claimed by the pool
    process that wrote it but not yet marked published; the sweeper sweeps; the send runs."""
    job = completed_job(repository)
    broker = Broker()
    publish_pending(repository, broker.send)  # the node
    repository.transition_job(job, JobState.RUNNING, expected=JobState.QUEUED)
    repository.record_analysis(job, task="mri-ehcc", model="m" * 64, lesions=[LESION], enqueue_send=True)
    assert publish_pending(repository, broker.send, grace_s=5.0) == 0  # too fresh for the sweeper
    [claimed] = repository.claim_outbox("pool:1", job_ids=[job])
    assert publish_pending(repository, broker.send, grace_s=0.0) == 0  # claimed: not the sweeper's
    broker.send(claimed.task_name, job, claimed.queue)
    repository.transition_job(job, JobState.SENT, expected=JobState.ANALYSED)  # the send ran at once
    assert repository.mark_published(claimed.outbox_id)
    assert publish_pending(repository, broker.send, grace_s=0.0) == 0
    assert state_of(database, job) == "sent"
    assert broker.sent == [(ANALYSE_TASK, job, "arrival"), (SEND_TASK, job, "arrival")]
