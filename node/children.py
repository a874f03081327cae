"""Processes kept running beside the node's or the worker's first process.

The node's further receivers (:mod:`node.receivers`) and the worker's outbox sweeper
(:mod:`worker.orchestration.sweeper`) are the same kind of child: started with the multiprocessing
"spawn" method (a fresh interpreter: no inherited threads, locks or database connections, which a
fork would copy mid-use), started again when they die, stopped with SIGTERM and then, past a
deadline, killed. In the child, SIGTERM asks it to stop, Ctrl-C (which reaches the whole process
group) is left to the parent, and a child whose parent has gone stops by itself, so a restarted
parent never finds orphans holding its ports or its database.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

SPAWN = multiprocessing.get_context("spawn")
RESTART_BACKOFF_S = 5.0
"""A child that exits within this many seconds of its last start waits that long to be started
again, so one that crashes at start-up does not loop."""


class ChildProcess:
    """One spawned child, started again by its parent when it exits."""

    def __init__(self, name: str, target: Callable[..., None], args: tuple[object, ...] = (), *,
                 daemon: bool, backoff_s: float = RESTART_BACKOFF_S) -> None:
        self.name = name
        self._target, self._args = target, args
        self._daemon = daemon
        self._backoff_s = backoff_s
        self._process: BaseProcess | None = None
        self._started_at = 0.0

    def start(self) -> None:
        process = SPAWN.Process(target=self._target, args=self._args, name=self.name, daemon=self._daemon)
        process.start()
        self._process = process
        self._started_at = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def restart_if_exited(self) -> bool:
        """Start the child again if it has exited (and its back-off has passed); True if it did."""
        process = self._process
        if process is None or process.is_alive() or time.monotonic() - self._started_at < self._backoff_s:
            return False
        log.warning("%s exited with status %s; starting it again", self.name, process.exitcode)
        process.close()
        self.start()
        return True

    def terminate(self) -> None:
        """SIGTERM: the child finishes what it is doing and exits."""
        if self.alive and self._process is not None:
            self._process.terminate()

    def join(self, timeout: float) -> None:
        """Wait for the child to exit; kill it past ``timeout``."""
        process = self._process
        if process is None:
            return
        process.join(timeout=max(timeout, 0.1))
        if process.is_alive():
            log.warning("%s did not stop in time; killed", self.name)
            process.kill()
            process.join(timeout=5)


def stop_requested() -> threading.Event:
    """In a child: an event set by SIGTERM; Ctrl-C is ignored (the parent decides for the group)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return stop


def parent_gone(parent: int) -> bool:
    """In a child: whether the process that started it (``parent``, its pid then) has exited."""
    return os.getppid() != parent
