"""``/metrics`` of ``triphase worker``: the counts of every pool process, added up.

Celery's prefork pool runs tasks in child processes, each with counters of its own that the parent's
HTTP server cannot see. prometheus-client's multiprocess mode solves this: every process writes its
values to memory-mapped files in one directory and the parent's collector sums them when scraped.
The directory is private (0700), made fresh for each run under the data directory and removed at
exit, so a restarted worker never adds up an earlier run's files and two workers never share one.

The parent also reports the queue depths (outbox rows not yet published, as the sweeper process
last counted them, and the broker's ``arrival`` and ``batch`` queues, read when Prometheus scrapes).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from db.task_names import ARRIVAL_QUEUE, BATCH_QUEUE
from node.metrics import MetricsServer, QueueDepth, use_multiprocess_values

log = logging.getLogger(__name__)

def broker_queue_depths(app: Celery, queues: tuple[str, ...] = (ARRIVAL_QUEUE, BATCH_QUEUE)
                        ) -> list[tuple[str, int]]:
    """Messages waiting in each of the broker's queues; nothing when the broker is unreachable."""
    depths: list[tuple[str, int]] = []
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            channel = connection.default_channel
            for queue in queues:
                try:
                    depths.append((queue, int(channel.queue_declare(queue=queue, passive=True).message_count)))
                except ChannelError:  # Redis keeps no key for an empty queue
                    depths.append((queue, 0))
    except (OperationalError, OSError):
        log.warning("queue depth: the broker could not be reached")
        return []
    return depths


@dataclass
class WorkerMetricsService:
    """The parent's multiprocess collector and its HTTP server.

    The parent keeps no database connection (it forks pool processes: :mod:`worker.celery_app`):
    the outbox depth is what the sweeper process last counted, handed over in shared memory, and
    the sweeper counts its own job transitions into the multiprocess files like a pool process.
    """

    directory: Path
    server: MetricsServer

    @classmethod
    def start(cls, *, data_dir: Path, bind: str, port: int, app: Celery,
              outbox: Callable[[], int | None]) -> WorkerMetricsService:
        directory = Path(tempfile.mkdtemp(prefix="metrics-", dir=data_dir))  # mode 0700
        use_multiprocess_values(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]  # likewise
        registry.register(QueueDepth(outbox, extra=lambda: broker_queue_depths(app)))
        return cls(directory, MetricsServer(registry, bind, port).start())

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
