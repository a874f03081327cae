"""How often a transient failure is tried again, and how long to wait first: a policy per task.

A task body is told which attempt it is (:class:`Attempt`) and never sleeps. The Celery task turns
a :class:`RetryPolicy` into ``countdown`` and ``max_retries``; the paths without a broker (the
embedded runner, a one-off send) wait in :func:`retry_transient`, the one loop that sleeps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from db.task_names import ANALYSE_TASK, SEND_TASK
from worker.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """Which try this is (from 1) out of how many; on the last one a transient failure is final."""

    number: int = 1
    of: int = 1

    @property
    def last(self) -> bool:
        return self.number >= self.of


ONLY_ATTEMPT = Attempt()
"""A call made once, with no retry behind it."""


@dataclass(frozen=True)
class RetryPolicy:
    """``delays_s[n]`` is the wait before attempt ``n + 2``; one attempt more than there are delays."""

    delays_s: tuple[float, ...] = ()

    @property
    def attempts(self) -> int:
        return len(self.delays_s) + 1

    def attempt(self, number: int) -> Attempt:
        return Attempt(number, self.attempts)

    def delay_after(self, attempt: Attempt) -> float:
        """How long to wait after ``attempt`` failed (it must not be the last)."""
        return self.delays_s[attempt.number - 1]


DATABASE_OUTAGE = RetryPolicy((5.0, 10.0, 20.0, 40.0, 80.0))
"""The analysis: the database or broker may be back within a few minutes."""

DESTINATION_DOWN = RetryPolicy((2.0, 8.0, 30.0))
"""The send: a destination that is down, busy (0xA7xx) or timing out; then the job is parked."""

TASK_RETRIES: Mapping[str, RetryPolicy] = {ANALYSE_TASK: DATABASE_OUTAGE, SEND_TASK: DESTINATION_DOWN}


def retry_transient(call: Callable[[Attempt], T], policy: RetryPolicy, *,
                    sleep: Callable[[float], object] = time.sleep) -> T:
    """``call(attempt)`` until it returns; a :class:`TransientError` waits and tries again.

    On the last attempt the error propagates, so ``call`` decides (from ``attempt.last``) whether
    to raise or to return a final result there.
    """
    attempt = policy.attempt(1)
    while True:
        try:
            return call(attempt)
        except TransientError as exc:
            if attempt.last:
                raise
            delay = policy.delay_after(attempt)
            log.warning("%s (attempt %d of %d); trying again in %.0f s", exc, attempt.number, attempt.of, delay)
            sleep(delay)
            attempt = policy.attempt(attempt.number + 1)
