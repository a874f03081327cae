"""The outbox sweeper and the watchdog of ``triphase worker``, in a spawned process of their own.

Celery's prefork parent forks a new pool process whenever one dies. A fork copies the parent's
memory, SQLite's in-process lock bookkeeping included: a parent thread caught inside SQLite at that
moment leaves the child a lock it can never take ("database is locked" for the child's whole
life). So the parent uses no database at all: it migrates, closes its engine, and starts this
process with the multiprocessing "spawn" method (a fresh interpreter, nothing inherited). Here the
sweeper publishes what the outbox still holds every ``--sweep-s`` (rows whose claim expired, and
unclaimed rows older than a grace: :mod:`db.repository.outbox`), the watchdog
(:mod:`worker.watchdog`) re-drives jobs that no task holds, and the outbox depth for ``/metrics``
goes to the parent through shared memory. The parent restarts the process if it dies; the process
ends when the parent stops it or dies (:class:`node.children.ChildProcess`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from db.logs import configure_logging
from db.queries import unpublished_outbox_count
from db.repository import Repository
from db.repository.outbox import SWEEP_GRACE_S
from db.runtime import Runtime
from db.settings import ConfigFile
from node.children import SPAWN, ChildProcess, parent_gone, stop_requested
from node.metrics import AuditWatch, Metrics
from worker.celery_app import create_app, publish_outbox
from worker.watchdog import Watchdog, broker_job_ids

log = logging.getLogger(__name__)

DEPTH_EVERY_S = 1.0
"""How often the outbox depth for /metrics is counted (the sweep itself may run ten times a second)."""


@dataclass(frozen=True)
class SweeperOptions:
    """What the spawned process needs: it reads the configuration file itself."""

    config_path: Path | None
    sweep_s: float
    job_lease_s: float
    log_level: str = "INFO"
    count_metrics: bool = False  # count the audit events it commits (prometheus multiprocess mode)

    @property
    def watch_every_s(self) -> float:
        """The watchdog's period: a tenth of the lease, between 1 s and a minute."""
        return min(60.0, max(1.0, self.job_lease_s / 10))


class _Loop:
    """One sweep and, when due, one watchdog round; errors are logged and the next round tries again."""

    def __init__(self, options: SweeperOptions, outbox_depth: ctypes.c_longlong | None) -> None:
        self.options, self.outbox_depth = options, outbox_depth
        self.app = create_app(options.config_path)
        runtime = Runtime(config=ConfigFile.locate(options.config_path))
        self.repository = Repository(runtime.database(upgrade=False))
        if options.count_metrics:
            AuditWatch(self.repository.db, Metrics()).start()  # jobs it moves to queued, for /metrics
        self.watchdog = Watchdog(self.repository, options.job_lease_s, lambda: broker_job_ids(self.app))
        self.next_watch = self.next_depth = 0.0

    def once(self) -> None:
        try:
            count = publish_outbox(self.app, self.repository, grace_s=SWEEP_GRACE_S)
            if count:
                log.info("outbox sweeper published %d task(s)", count)
        except Exception:  # noqa: BLE001 - database or broker down: try again next sweep
            log.warning("outbox sweep failed; retrying in %.1f s", self.options.sweep_s)
        now = time.monotonic()
        if now >= self.next_watch:
            self.next_watch = now + self.options.watch_every_s
            try:
                redriven = self.watchdog.check()
                if redriven:
                    publish_outbox(self.app, self.repository, job_ids=redriven)
            except Exception:  # noqa: BLE001 - likewise
                log.warning("watchdog round failed; retrying in %.0f s", self.options.watch_every_s)
        if self.outbox_depth is not None and now >= self.next_depth:
            self.next_depth = now + DEPTH_EVERY_S
            try:
                self.outbox_depth.value = unpublished_outbox_count(self.repository.db)
            except Exception:  # noqa: BLE001 - the metric goes without this sample
                self.outbox_depth.value = -1


def sweep_forever(options: SweeperOptions, outbox_depth: ctypes.c_longlong | None = None) -> None:
    """The spawned process's body: sweep until SIGTERM or until the parent is gone."""
    configure_logging(options.log_level)
    stop = stop_requested()
    parent = os.getppid()
    loop = _Loop(options, outbox_depth)
    log.info("outbox sweeper every %.1f s, watchdog every %.0f s (job lease %.0f s)",
             options.sweep_s, options.watch_every_s, options.job_lease_s)
    while not stop.is_set() and not parent_gone(parent):
        loop.once()
        stop.wait(options.sweep_s)


class SweeperProcess:
    """The parent's handle: spawns the sweeper, restarts it if it dies, stops it at exit."""

    def __init__(self, options: SweeperOptions, *, check_s: float = 2.0) -> None:
        self.options = options
        self.check_s = check_s
        # Written by the sweeper, read by the parent's /metrics: one aligned 64-bit word, no lock needed.
        self.outbox_depth: ctypes.c_longlong = SPAWN.RawValue(ctypes.c_longlong, -1)
        self._child = ChildProcess("outbox sweeper", sweep_forever, (options, self.outbox_depth), daemon=True,
                                   backoff_s=0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="sweeper-supervisor", daemon=True)

    def outbox(self) -> int | None:
        """The outbox depth as last counted by the sweeper (None before its first count, or unreadable)."""
        value = int(self.outbox_depth.value)
        return value if value >= 0 else None

    def start(self) -> SweeperProcess:
        self._child.start()
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(self.check_s):
            self._child.restart_if_exited()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)
        if self._child.alive:
            self._child.terminate()  # SIGTERM: the loop finishes its round and returns
            self._child.join(timeout)
