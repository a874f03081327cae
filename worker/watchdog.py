"""The watchdog: a job that waits for a task nobody holds any more is driven again.

A job in ``queued``, ``running`` or ``analysed`` waits for a task message in the broker. Acks are
late and a dead worker's message comes back (:mod:`worker.celery_app`), so normally one always
exists; but a Redis restarted without persistence, a flush, or a task that ended without moving
its job (a bug, a kill at the wrong moment) leaves the job waiting for ever. Every few seconds
``triphase worker``'s sweeper process (:mod:`worker.orchestration.sweeper`) asks the database for
jobs that have waited longer than ``[worker] job_lease_s`` with nothing of theirs left to publish,
asks the broker which jobs have a task message (waiting in a queue, or delivered and not yet
acknowledged: running, retrying after a countdown, or held by a dead worker until the visibility
timeout gives it back), and re-drives the others: a new outbox row for the step that moves the job
on, audited as ``job.redriven``. The task bodies are idempotent, so a re-drive that turns out to
duplicate a live task is a no-op when it runs.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from db.repository import Repository
from db.task_names import ANALYSE_TASK, ARRIVAL_QUEUE, BATCH_QUEUE, SEND_TASK

log = logging.getLogger(__name__)

OUR_TASKS = frozenset({ANALYSE_TASK, SEND_TASK})


def job_of_message(raw: bytes | str) -> int | None:
    """The job id of one of our task messages as Redis keeps it (kombu's JSON envelope around
    Celery's message, base64 body ``[args, kwargs, embed]``); None for anything else."""
    try:
        payload = json.loads(raw)
        if isinstance(payload, list):  # an unacknowledged delivery: [message, exchange, routing key]
            payload = payload[0]
        if payload.get("headers", {}).get("task") not in OUR_TASKS:
            return None
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return int(json.loads(body)[0][0])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _queue_key(channel: Any, queue: str, step: int) -> str:
    """The Redis list of one queue and priority step, as kombu's Redis channel names it."""
    priority = channel.priority(step)
    return f"{queue}{channel.sep}{priority}" if priority else queue


def broker_job_ids(app: Celery, queues: Iterable[str] = (ARRIVAL_QUEUE, BATCH_QUEUE)) -> set[int] | None:
    """Jobs with a task message in the broker: waiting in a queue or delivered and not acknowledged.

    None when that cannot be told (the broker is down, or not Redis): the watchdog then re-drives
    nothing. Reads kombu's Redis layout (a list per queue and priority, the ``unacked`` hash).
    """
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.default_channel
            client = channel.client
            keys = [_queue_key(channel, queue, pri) for queue in queues for pri in channel.priority_steps]
            raws: list[bytes] = [raw for key in keys for raw in client.lrange(key, 0, -1)]
            raws += client.hvals(channel.unacked_key)
    except Exception:  # kombu and redis raise errors of their own; any of them means "cannot tell"
        log.warning("watchdog: the broker's queues could not be read", exc_info=log.isEnabledFor(logging.DEBUG))
        return None
    return {job for job in map(job_of_message, raws) if job is not None}


@dataclass
class Watchdog:
    """Finds jobs past the lease with no live task, and re-drives them through the outbox."""

    repository: Repository
    lease_s: float
    live_jobs: Callable[[], set[int] | None]

    def check(self) -> list[int]:
        """Re-drive what needs it; returns the job ids re-driven (their outbox rows await publishing)."""
        stale = self.repository.stale_jobs(self.lease_s)
        if not stale:
            return []
        live = self.live_jobs()
        if live is None:
            log.warning("watchdog: %d job(s) waited past the lease, but the broker cannot be read; "
                        "not re-driven now", len(stale))
            return []
        redriven = []
        for job in stale:
            if job.job_id in live or not self.repository.redrive_job(job, self.lease_s):
                continue
            log.warning("watchdog: job #%d %s for %.0f s with no task alive; %s queued again",
                        job.job_id, job.state.value, job.idle_s, job.task_name)
            redriven.append(job.job_id)
        return redriven
