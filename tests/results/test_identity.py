"""The installation's Device UID: made once, the same for every worker process, even when several
processes of a fresh installation ask for it at the same moment."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from worker.results.identity import DEVICE_UID_FILE, device_uid


def _ask(data_dir: Path, start: multiprocessing.synchronize.Event, answers: multiprocessing.Queue) -> None:
    start.wait(10)
    answers.put(device_uid(data_dir))


def test_processes_asking_at_once_agree_on_one_device_uid(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start, answers = context.Event(), context.Queue()
    processes = [context.Process(target=_ask, args=(tmp_path, start, answers)) for _ in range(8)]
    for process in processes:
        process.start()
    start.set()
    uids = {answers.get(timeout=30) for _ in processes}
    for process in processes:
        process.join(timeout=10)
    assert len(uids) == 1 and all(p.exitcode == 0 for p in processes)
    assert (tmp_path / DEVICE_UID_FILE).read_text().strip() == uids.pop()
    assert [p.name for p in tmp_path.iterdir()] == [DEVICE_UID_FILE]  # no candidate left behind
