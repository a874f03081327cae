"""Calls started at the same moment on threads of their own: the races tests provoke."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(calls: list[Callable[[], T]], *, join_s: float = 60.0) -> list[T]:
    """Every call on its own thread, released together by a barrier; their results (in the order
    they finished). Any exception, or a call that did not finish within ``join_s``, fails the test."""
    barrier = threading.Barrier(len(calls))
    results: list[T] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], T]) -> None:
        barrier.wait(timeout=30)
        try:
            results.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=join_s)
    assert not errors, errors
    assert len(results) == len(calls)
    return results


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, *, poll_s: float = 0.05) -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(poll_s)
