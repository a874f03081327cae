"""The Celery application, made by a factory (never at import time), and its two thin tasks.

Tasks take a job id and run the bodies in :mod:`worker.jobs` through :func:`worker.jobs.run_step`;
acks are late and a task whose worker dies is redelivered, so an analysis interrupted by a crash
runs again, once, with the same output UIDs. A body's :class:`~worker.errors.TransientError`
(database, broker or destination unavailable) becomes a Celery retry with the task's back-off
(:data:`worker.retry.TASK_RETRIES`); on the last attempt, and for anything else, the job is parked
as failed with a reason a person can act on.

The prefork parent stays light: :mod:`worker.jobs` (and with it torch) is imported by each pool
process after the fork. A parent holding torch forks ten times slower; and the parent holds no
database connection at all (the outbox sweeper runs in a spawned process of its own,
:mod:`worker.orchestration.sweeper`), because a connection caught inside SQLite during a fork
leaves the child a lock it can never take.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from billiard.process import current_process
from celery import Celery, Task
from celery.signals import worker_process_init
from kombu.entity import Queue

from db.repository import Repository
from db.runtime import Runtime
from db.settings import ConfigFile
from db.states import JobState
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE, BATCH_QUEUE, SEND_TASK
from db.transient import is_transient
from node.dispatch import publish_pending
from node.settings import BrokerSettings
from worker.devices import cpu_threads_for_process, device_for_process
from worker.errors import TransientError
from worker.retry import TASK_RETRIES

if TYPE_CHECKING:
    from worker.jobs import WorkerContext

log = logging.getLogger(__name__)


class PipelineTask(Task):  # type: ignore[misc]  # celery ships no type information
    """Base of the pipeline's tasks: holds the per-process :class:`WorkerContext`, made lazily.

    One context per configuration file and process, shared by both tasks (one engine, one model
    cache); it is created on first use after the fork and never inherited from the parent.
    """

    _contexts: ClassVar[dict[Path | None, WorkerContext]] = {}

    @property
    def config(self) -> ConfigFile:
        config: ConfigFile = self.app.conf.triphase_config
        return config

    @property
    def context(self) -> WorkerContext:
        key = self.config.path
        if key not in self._contexts:
            self._contexts[key] = _create_context(self.config, int(self.app.conf.triphase_processes))
        return self._contexts[key]

    @classmethod
    def forget_contexts(cls) -> None:
        """Drop every context (a forked child must not share its parent's connections)."""
        while cls._contexts:
            _, ctx = cls._contexts.popitem()
            ctx.repository.db.dispose()

    def _context_or_retry(self) -> WorkerContext:
        """The context; a database that is locked or down while it is made is a reason to retry."""
        try:
            return self.context
        except Exception as exc:
            if is_transient(exc):
                raise TransientError(f"worker start: {type(exc).__name__}: {exc}") from exc
            raise

    def run_job_step(self, job_id: int) -> JobState:
        """This task's body for ``job_id``; a transient failure is retried after the policy's countdown."""
        policy = TASK_RETRIES[self.name]
        attempt = policy.attempt(self.request.retries + 1)
        from worker.jobs import run_step  # noqa: PLC0415 - in the pool process, after the fork (module docstring)

        try:
            return run_step(self.name, self._context_or_retry(), job_id, attempt)
        except TransientError as exc:
            raise self.retry(exc=exc, countdown=policy.delay_after(attempt),
                             max_retries=policy.attempts - 1) from exc


def _create_context(config: ConfigFile, processes: int) -> WorkerContext:
    """The pool process's context; its torch threads are its share of the cores (``processes`` share them)."""
    import torch  # noqa: PLC0415 - in the pool process, after the fork (module docstring)

    from worker.jobs import WorkerContext  # noqa: PLC0415 - likewise

    torch.set_num_threads(cpu_threads_for_process(processes, len(os.sched_getaffinity(0))))
    ctx = WorkerContext.from_runtime(Runtime(config=config))
    if ctx.device == "auto":
        ctx.device = device_for_process("auto", getattr(current_process(), "index", 0), torch.cuda.device_count())
    return ctx


def _after_fork(**_: Any) -> None:
    PipelineTask.forget_contexts()


def analyse(task: PipelineTask, job_id: int) -> str:
    """``triphase.analyse``: the analysis, then its send step is published right away."""
    state = task.run_job_step(job_id)
    if state is JobState.ANALYSED:
        try:
            publish_outbox(task.app, task.context.repository, job_ids=[job_id])
        except Exception:  # the analysis is recorded; the sweeper publishes its send later
            log.warning("job #%d: the send step could not be published now; the sweeper will", job_id,
                        exc_info=True)
    return state.value


def send(task: PipelineTask, job_id: int) -> str:
    """``triphase.send``: the job's SR and SC to every destination."""
    return task.run_job_step(job_id).value


def create_app(config_path: Path | None = None, *, processes: int = 1) -> Celery:
    """A Celery app for this installation's configuration (broker, database, models).

    ``processes`` is the size of the worker's pool: the pool processes share the machine's cores.
    """
    config = ConfigFile.locate(config_path)
    broker = Runtime(config=config).section(BrokerSettings)
    app = Celery("triphase", broker=broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=ARRIVAL_QUEUE,
        task_queues=[Queue(name) for name in (ARRIVAL_QUEUE, BATCH_QUEUE)],  # type: ignore[no-untyped-call]
        # "priority": queues are read in the order given to the worker (arrival before batch),
        # instead of kombu's default round robin, so on-arrival work never waits behind a batch.
        broker_transport_options={"visibility_timeout": broker.visibility_timeout_s,
                                  "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        triphase_config=config,
        triphase_processes=processes,
    )
    app.task(base=PipelineTask, name=ANALYSE_TASK, bind=True)(analyse)
    app.task(base=PipelineTask, name=SEND_TASK, bind=True)(send)
    worker_process_init.connect(_after_fork, weak=False, dispatch_uid="triphase-forget-parent-contexts")
    return app


def publish_outbox(app: Celery, repository: Repository, *, grace_s: float | None = None,
                   job_ids: Collection[int] | None = None) -> int:
    """Claim and publish outbox rows (:func:`node.dispatch.publish_pending`): the sweeper's (with
    ``grace_s``), or a pool process's own job's right after its analysis (``job_ids``)."""
    return publish_pending(repository, lambda name, job_id, queue: app.send_task(name, args=[job_id], queue=queue),
                           grace_s=grace_s, job_ids=job_ids)
