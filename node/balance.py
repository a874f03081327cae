"""Which receiving process accepts the next connection: the one holding the fewest.

With ``[node] receivers = N`` every process accepts from the same listening sockets: the first
process binds them and the others inherit them when they are spawned. Left to itself the kernel
does not balance associations by load: ``SO_REUSEPORT`` (which the node used before) hashes each
connection's addresses to one process's socket, so four associations from a PACS landed three or
four on one process about five times in eight, and a shared socket goes to whichever process calls
``accept()`` first. Measured with four dcmtk associations and two processes, the split decided the
throughput more than anything the processes did.

So each process publishes, on an :class:`AcceptBoard` in shared memory (one slot each), how many
connections it holds and how many it has accepted in all, and accepts only when no other live
process holds fewer (ties go to the one that has accepted fewer, so short associations alternate).
A process that is not due leaves the connection in the queue for the one that is and looks again
after :data:`PAUSE_S`. Nothing waits on a process that cannot take its turn: one that has been due
for :data:`TAKEOVER_S` without taking the waiting connection (dead, stopped, or too busy to reach
its accept loop) loses its turn to whichever process sees that first, and the first process marks
a receiver that has exited absent until it has started again.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray
from typing import Any

ABSENT = 2**62
"""The open-connection count of a process that does not accept (not started, exited or stopping)."""
PAUSE_S = 0.002
"""How long a process that is not due waits before looking at a pending connection again."""
TAKEOVER_S = 0.1
"""How long connections may wait, unaccepted, before a process that is not due takes them."""
_STREAK_GAP_S = 0.05  # declines further apart than this are separate waits, not one long one


class AcceptBoard:
    """Per process, in shared memory: connections held now, and connections accepted in all.

    Each process writes only its own slot; reading the others' without a lock is enough, because a
    stale value only makes two processes due at once (the kernel then gives the connection to one).
    """

    def __init__(self, processes: int) -> None:
        """Every slot absent: a process publishes its own once its listeners serve. Spawned
        receivers inherit the board in their arguments (multiprocessing passes the shared memory)."""
        self.processes = processes
        self._open: Any = RawArray("q", [ABSENT] * processes)
        self._accepted: Any = RawArray("q", [0] * processes)

    def publish(self, index: int, held: int, accepted: int) -> None:
        self._open[index] = held
        self._accepted[index] = accepted

    def absent(self, index: int) -> None:
        """``index`` takes no connections until it publishes again."""
        self._open[index] = ABSENT

    def held(self, index: int) -> int:
        return int(self._open[index])

    def least_accepted(self, index: int) -> int:
        """The fewest connections any other live process has accepted (0 if none is live)."""
        counts = [self._accepted[other] for other in range(self.processes)
                  if other != index and self._open[other] < ABSENT]
        return int(min(counts, default=0))

    def due(self, index: int) -> bool:
        """Whether no other live process holds fewer connections (nor as many, having accepted fewer)."""
        mine = (self._open[index], self._accepted[index])
        for other in range(self.processes):
            if other != index and self._open[other] < ABSENT and (self._open[other], self._accepted[other]) < mine:
                return False
        return True


@dataclass
class SharedListeners:
    """What a receiving process needs to share the node's listeners: the board, its own slot, and
    (in the receivers) the listening sockets the first process bound, plain first, then TLS."""

    board: AcceptBoard
    index: int
    sockets: tuple[socket.socket, ...] = field(default=())


class AcceptTurn:
    """One process's side of the board: it counts the connections this process holds."""

    def __init__(self, board: AcceptBoard, index: int) -> None:
        self.board, self.index = board, index
        self._lock = threading.Lock()
        self._held: set[object] = set()
        self._accepted = 0
        self._leaving = False
        self._streak_start = 0.0
        self._last_decline = 0.0

    def join(self) -> None:
        """Take connections from now on (the listeners are serving).

        A process that starts late (a receiver started again) counts as having accepted as many
        as the least busy other one: otherwise it would win every tie until it had caught up,
        taking all short associations while the others idle."""
        with self._lock:
            self._leaving = False
            self._accepted = max(self._accepted, self.board.least_accepted(self.index))
            self._publish()

    def leave(self) -> None:
        """Take no more connections (stopping); the others are due from now on."""
        with self._lock:
            self._leaving = True
            self.board.absent(self.index)

    def may_accept(self) -> bool:
        """Whether to accept the pending connection now; after a short pause if not."""
        if self.board.due(self.index):
            return True
        now = time.monotonic()
        if now - self._last_decline > _STREAK_GAP_S:
            self._streak_start = now
        self._last_decline = now
        if now - self._streak_start >= TAKEOVER_S:
            self._streak_start = now
            return True
        time.sleep(PAUSE_S)
        return False

    def opened(self, key: object) -> None:
        with self._lock:
            self._held.add(key)
            self._accepted += 1
            self._publish()

    def closed(self, key: object) -> None:
        with self._lock:
            if key in self._held:
                self._held.discard(key)
                self._publish()

    @property
    def held(self) -> int:
        return len(self._held)

    def _publish(self) -> None:
        if not self._leaving:
            self.board.publish(self.index, len(self._held), self._accepted)
