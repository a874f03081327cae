"""The spawned children of the node and the worker: stopped by SIGTERM, killed past a deadline,
started again when they exit (after their back-off)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from node.children import ChildProcess, stop_requested


def _wait_for_sigterm(marker: str) -> None:
    stop = stop_requested()
    Path(marker).write_text(str(os.getpid()))
    stop.wait(30)


def _ignore_sigterm(marker: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(marker).write_text(str(os.getpid()))
    time.sleep(30)


def _count_and_exit(marker: str) -> None:
    with Path(marker).open("a") as counter:
        counter.write("x")


def _wait_for(path: Path, predicate: object = bool, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if callable(predicate) and predicate(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path} never became ready")


def test_sigterm_stops_a_child(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    child = ChildProcess("waiter", _wait_for_sigterm, (str(marker),), daemon=True)
    child.start()
    _wait_for(marker)
    assert child.alive
    child.terminate()
    child.join(timeout=10)
    assert not child.alive


def test_a_child_that_ignores_sigterm_is_killed_past_the_deadline(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    child = ChildProcess("stubborn", _ignore_sigterm, (str(marker),), daemon=True)
    child.start()
    _wait_for(marker)
    child.terminate()
    started = time.monotonic()
    child.join(timeout=0.5)
    assert not child.alive and time.monotonic() - started < 10


def test_an_exited_child_starts_again_after_its_backoff(tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    child = ChildProcess("brief", _count_and_exit, (str(marker),), daemon=True, backoff_s=1.0)
    child.start()
    _wait_for(marker, lambda text: text == "x")
    while child.alive:
        time.sleep(0.05)
    assert not child.restart_if_exited()  # within the back-off: a crash loop waits
    time.sleep(1.1)
    assert child.restart_if_exited()
    _wait_for(marker, lambda text: text == "xx")
    child.join(timeout=10)
