"""The Celery application, made by a factory (never at import time), and its two thin tasks.

Tasks take a job id and call the bodies in :mod:`worker.jobs`; acks are late and a task whose
worker dies is redelivered, so an analysis interrupted by a crash runs again, once, with the same
output UIDs. Only transient failures (database or broker unavailable) are retried, with back-off;
anything else parks the job as failed with a reason a person can act on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE, BATCH_QUEUE, SEND_TASK
from db.runtime import Runtime
from db.settings import ConfigFile
from db.states import JobState
from node.settings import BrokerSettings

log = logging.getLogger(__name__)
TRANSIENT = (ConnectionError, TimeoutError)


def create_app(config_path: Path | None = None) -> Celery:
    """A Celery app for this installation's configuration (broker, database, models)."""
    runtime = Runtime(config=ConfigFile.locate(config_path))
    broker = runtime.section(BrokerSettings)
    app = Celery("triphase", broker=broker.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=ARRIVAL_QUEUE,
        task_queues=[Queue(ARRIVAL_QUEUE), Queue(BATCH_QUEUE)],
        # "priority": queues are read in the order given to the worker (arrival before batch),
        # instead of kombu's default round robin, so on-arrival work never waits behind a batch.
        broker_transport_options={"visibility_timeout": broker.visibility_timeout_s,
                                  "queue_order_strategy": "priority"},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    state: dict[str, Any] = {}

    def context() -> Any:
        """The per-process worker context, created lazily after the fork."""
        if "ctx" not in state:
            from billiard.process import current_process  # noqa: PLC0415

            from worker.devices import device_for_process  # noqa: PLC0415
            from worker.jobs import WorkerContext  # noqa: PLC0415

            ctx = WorkerContext.from_runtime(Runtime(config=runtime.config))
            if ctx.device == "auto":
                import torch  # noqa: PLC0415

                ctx.device = device_for_process("auto", getattr(current_process(), "index", 0),
                                                torch.cuda.device_count())
            state["ctx"] = ctx
        return state["ctx"]

    @worker_process_init.connect(weak=False)
    def _after_fork(**_: Any) -> None:
        ctx = state.pop("ctx", None)  # never share a parent's connections
        if ctx is not None:
            ctx.repository.db.dispose()

    def _run(task: Any, body: Any, job_id: int) -> str:
        ctx = context()
        try:
            return str(body(ctx, job_id))
        except TRANSIENT as exc:
            raise task.retry(exc=exc, countdown=min(2 ** task.request.retries * 5, 300), max_retries=5) from exc
        except Exception as exc:
            log.exception("job #%d: %s failed", job_id, task.name)
            ctx.repository.transition_job(job_id, JobState.FAILED, reason=f"{task.name}: {type(exc).__name__}: {exc}")
            return JobState.FAILED.value

    @app.task(name=ANALYSE_TASK, bind=True)
    def analyse(self: Any, job_id: int) -> str:
        from worker.jobs import run_analyse  # noqa: PLC0415

        state_after = _run(self, run_analyse, job_id)
        if state_after == JobState.ANALYSED.value:
            publish_outbox(app, context().repository)  # the send step, right away
        return state_after

    @app.task(name=SEND_TASK, bind=True)
    def send(self: Any, job_id: int) -> str:
        from worker.jobs import run_send  # noqa: PLC0415

        return _run(self, run_send, job_id)

    app.triphase_context = context  # type: ignore[attr-defined]
    return app


def publish_outbox(app: Celery, repository: Any) -> int:
    """Publish what the outbox holds (the sweeper, and right after an analysis)."""
    from node.dispatch import publish_pending  # noqa: PLC0415

    return publish_pending(repository, lambda name, job_id, queue: app.send_task(name, args=[job_id], queue=queue))
