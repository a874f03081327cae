"""A background thread that calls ``flush()`` once per window, and once more on stop.

The door's refused-connection counts and the rejected-association counts are both written as one
audit row per address and window, never one database write per hostile packet; this is the loop
they share.
"""

from __future__ import annotations

import threading


class PeriodicFlush:
    """Subclasses implement :meth:`flush`; :meth:`start` and :meth:`stop` run it every ``window_s``."""

    thread_name = "periodic-flush"

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and write what is still counted."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.window_s):
            self.flush()
