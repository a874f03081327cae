"""Study completion: a quiet period after the last instance, or a hard cap after the first.

DICOM has no "end of study" message, so completion is inferred. The deadlines live in the study
row (set by every stored instance), so any node process sharing the database may complete a study
exactly once, and a restarted node picks up where it stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from db.repository import Repository
from node.dispatch import JobDispatcher

log = logging.getLogger(__name__)


class CompletionMonitor:
    """A background thread that completes due studies every ``poll_s`` seconds."""

    def __init__(self, repository: Repository, dispatcher: JobDispatcher, *, poll_s: float = 1.0,
                 shadow_for: Callable[[str | None], bool] | None = None) -> None:
        self.repository = repository
        self.shadow_for = shadow_for
        self.dispatcher = dispatcher
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="study-completion", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_once(self) -> int:
        """Complete what is due now and dispatch it; returns how many studies completed."""
        completed = self.repository.complete_due_studies(shadow_for=self.shadow_for)
        if completed:
            self.dispatcher.dispatch(completed)
        return len(completed)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end completion for good
                log.exception("study completion check failed; retrying in %.1f s", self.poll_s)
