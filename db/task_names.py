"""Celery task and queue names, the one place both the node (publisher) and the worker read them.

The node publishes by name with Celery's client and never imports the worker, so the names are
plain constants in the package both may import.
"""

from __future__ import annotations

from typing import Final

ANALYSE_TASK: Final = "triphase.analyse"
SEND_TASK: Final = "triphase.send"
ARRIVAL_QUEUE: Final = "arrival"
BATCH_QUEUE: Final = "batch"
QUEUES: Final = (ARRIVAL_QUEUE, BATCH_QUEUE)
