"""Stacks of the processes of a transfer that stalled, taken while it is stalled.

A DIMSE timeout only says, thirty seconds later, that something waited; by then the processes
have moved on. :class:`StallWatch` is told each time the transfer moves and, once it has not moved
for ``after_s``, dumps the Python stacks of the given processes (py-spy) once, for the test's
failure message.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

PY_SPY = Path(sys.executable).with_name("py-spy")


class StallWatch:
    def __init__(self, pids: dict[str, int], *, after_s: float = 5.0) -> None:
        self.pids = pids
        self.after_s = after_s
        self.dumps = ""
        self._moved = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def moved(self, *_: object) -> None:
        self._moved = time.monotonic()

    def __enter__(self) -> StallWatch:
        self.moved()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._done.wait(0.5):
            if not self.dumps and time.monotonic() - self._moved > self.after_s:
                self.dumps = "\n".join(self._dump(name, pid) for name, pid in self.pids.items())

    @staticmethod
    def _dump(name: str, pid: int) -> str:
        try:
            run = subprocess.run([str(PY_SPY), "dump", "--pid", str(pid)], capture_output=True, text=True,
                                 timeout=20)
            return f"--- {name} (pid {pid}), stalled:\n{run.stdout}{run.stderr}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"--- {name} (pid {pid}): no stack ({exc})"
