"""More receiving processes on the same ports, so that N associations use N cores.

One Python process receives on one core: pynetdicom's reactors, the header walk and the commit of
every instance share one interpreter lock. With ``[node] receivers = N`` the node starts N - 1
further processes that accept from the listening sockets the first process bound (they inherit
them), taking turns by load (:mod:`node.balance`), and write to the same spool and database. Each is a
full door (ARTIM, PDU and size limits, per-address cap, audit) whose association limits count its
own connections. Only the first process, which starts them, runs recovery, completes studies and
serves ``/metrics``: completion reads the deadlines every process writes into the study rows, so a
study completes exactly once whichever process received its instances.

The first process supervises the others (:class:`node.children.ChildProcess`): a receiver that dies
is started again (and logged), and SIGTERM stops them all with the same grace period as its own
associations. A receiver whose first process has died (kill -9) stops by itself and closes the
listening sockets it inherited, so a restarted node can bind its ports again.
Connections waiting in a receiver's accept queue when it is killed are lost with it (the sender's
association fails and it sends again); accepted associations are never acknowledged unstored.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace

from db.logs import configure_logging
from db.private import restrict_new_files
from db.repository import Repository
from db.runtime import Runtime
from db.settings import ConfigFile
from node import collector
from node.balance import SharedListeners
from node.children import ChildProcess, parent_gone, stop_requested
from node.dispatch import OutboxOnly
from node.scp import DicomNode
from node.settings import NodeSettings
from node.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceiverSpec:
    """What a receiving process needs: the configuration as the first process read it, with the
    ports it actually listens on (a configured port 0 picks one; the others must share it)."""

    config: ConfigFile
    settings: NodeSettings
    log_level: str
    index: int
    parent: int = 0  # the first process: a receiver whose parent has gone stops as if told to
    shared: SharedListeners | None = None  # the board and the first process's listening sockets


def listening_settings(settings: NodeSettings, plain_port: int | None, tls_port: int | None) -> NodeSettings:
    """``settings`` with the ports the first process bound, for the receivers to bind as well."""
    update: dict[str, object] = {}
    if plain_port is not None and settings.plain:
        update["port"] = plain_port
    if tls_port is not None and settings.tls is not None:
        update["tls"] = settings.tls.model_copy(update={"port": tls_port})
    return settings.model_copy(update=update)


def receive(spec: ReceiverSpec) -> None:
    """The body of one receiving process: a door on the shared ports until SIGTERM."""
    restrict_new_files()
    configure_logging(spec.log_level, label=f"receiver {spec.index}")
    runtime = Runtime(config=spec.config)
    repository = Repository(runtime.database(upgrade=False))
    spool = Spool.from_settings(spec.settings, runtime.general)
    node = DicomNode(spec.settings, spool, repository, OutboxOnly(), completes=False, shared=spec.shared)
    stop = stop_requested()
    node.start()
    collector.settle()
    log.info("receiver %d listening", spec.index)
    while not stop.wait(0.5):
        if spec.parent and parent_gone(spec.parent):
            log.warning("receiver %d: the node's first process has gone; stopping", spec.index)
            break
    node.shutdown()
    runtime.close()


class ReceiverPool:
    """The further receiving processes of one node, started, kept running and stopped by the first."""

    def __init__(self, spec: ReceiverSpec, count: int, *, grace_s: float) -> None:
        self.spec, self.count, self.grace_s = spec, count, grace_s
        parent = os.getpid()
        self._board = spec.shared.board if spec.shared is not None else None
        self._children = [
            ChildProcess(f"receiver {index}", receive,
                         (replace(spec, index=index, parent=parent,
                                  shared=replace(spec.shared, index=index) if spec.shared else None),),
                         daemon=False)
            for index in range(1, count + 1)
        ]

    def start(self) -> ReceiverPool:
        for child in self._children:
            child.start()
        return self

    def alive(self) -> int:
        return sum(1 for child in self._children if child.alive)

    def supervise(self) -> None:
        """Start again every receiver that has exited (not more often than every few seconds);
        until it has, it takes no turn on the listeners."""
        for index, child in enumerate(self._children, start=1):
            if not child.alive and self._board is not None:
                self._board.absent(index)
            child.restart_if_exited()

    def stop(self) -> None:
        """SIGTERM to every receiver: each lets its associations finish within the grace period
        (the first process does the same meanwhile, then :meth:`join`)."""
        for child in self._children:
            child.terminate()

    def join(self) -> None:
        deadline = time.monotonic() + self.grace_s + 15.0
        for child in self._children:
            child.join(timeout=deadline - time.monotonic())
