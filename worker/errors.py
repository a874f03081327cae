"""The two kinds of failure a worker task body may raise, and nothing else decides retries.

A task body (:mod:`worker.jobs`) raises :class:`TransientError` when trying again later may
succeed (the database, broker or a destination is unreachable or out of resources) and
:class:`PermanentError` when it will not (the job needs a person). The Celery task in
:mod:`worker.celery_app` is the one place that turns them into a retry with back-off or a parked
job; bodies never sleep through their own back-off.
"""

from __future__ import annotations


class TransientError(Exception):
    """Worth another try later: retried by Celery with back-off, then parked as failed."""


class PermanentError(Exception):
    """Will not succeed by trying again: the job is parked as failed with this message."""
