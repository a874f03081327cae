"""Publishing completed studies to the workers through the broker, with Celery's client only.

The node never imports the worker: it sends tasks by name (:mod:`db.task_names`) to the queues
the workers consume. Kept apart from :mod:`node.dispatch` so that only a node that publishes loads
Celery.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from db.repository import CompletedStudy
from node.dispatch import Outbox, OutboxOnly, publish_pending


class CeleryPublisher:
    """Publish completed studies to the workers by task name, with Celery's client only."""

    def __init__(self, broker_url: str, repository: Outbox, *, visibility_timeout_s: int = 3600) -> None:
        self.repository = repository
        self.client = Celery("triphase-node", broker=broker_url, set_as_current=False)
        self.client.conf.broker_transport_options = {"visibility_timeout": visibility_timeout_s}
        self.client.conf.broker_connection_retry_on_startup = False
        self.client.conf.broker_connection_timeout = 3

    def send(self, task_name: str, job_id: int, queue: str) -> None:
        self.client.send_task(task_name, args=[job_id], queue=queue, retry=False)

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        OutboxOnly().dispatch(completed)
        publish_pending(self.repository, self.send)
