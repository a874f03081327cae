"""Where one association's time goes: the node's C-STORE path, stage by stage, in process.

``bench/ingest.py`` says how fast the node is against Orthanc; this says why. The node runs in
this process (SQLite, the default spool), dcmtk ``storescu`` sends the ingest benchmark's CT slices
over one association (or ``--associations N``), and every stage of the path is timed per instance:
the wall time of the handler's steps (header, fsync wait and rename, row), and the CPU of the two
pynetdicom threads of each association (receiving, handling) and of the whole process. The figures
go to ``bench/results/``. From the repository root:

    python bench/ingest_profile.py [--instances 300] [--associations 1] [--matrix 512]
                                   [--slow-commit-ms 4 [--one-row-per-commit]]

``--slow-commit-ms`` stands in for a disk whose fsync is slow (a SAN): it shows what group commit
(``db/group_commit.py``) does where commits, not the CPU, are the limit; ``--one-row-per-commit``
turns it off for comparison. The timers wrap functions, so the instances/s here is a little below ``bench/ingest.py``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pynetdicom.association import Association  # noqa: E402

from bench.ingest import ENV, STORESCU, fresh_database, instances_folder, make_instances, work_folder  # noqa: E402
from bench.provenance import header, write_result  # noqa: E402
from db.engine import Database  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from db.repository import Repository  # noqa: E402
from node import receiver, spool  # noqa: E402
from node.dispatch import Collecting  # noqa: E402
from node.scp import DicomNode  # noqa: E402
from node.settings import NodeSettings, PeerSettings  # noqa: E402
from node.wakeups import WakefulDUL  # noqa: E402

STAGES: list[tuple[Any, str]] = [
    (receiver.StoreHandler, "_handle"),  # the whole handler
    (receiver, "_read_header"),
    (receiver.StoreHandler, "_adopt"),  # fsyncs the file (or waits for its early fsync), renames, fsyncs the folder
    (spool, "_fsync_dir"),
    (receiver.StoreHandler, "_record"),  # the row's transaction
]


class Timers:
    """Wall seconds per call of the wrapped functions, and CPU seconds per pynetdicom thread."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def wrap(self, owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with timers._lock:
                    timers.wall[name].append(time.perf_counter() - start)

        setattr(owner, name, timed)

    def count_thread_cpu(self, owner: Any, name: str, label: str) -> None:
        """Add the thread's CPU time when ``owner.name`` (a thread's main loop) returns."""
        original: Callable[..., Any] = getattr(owner, name)
        timers = self

        def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return original(*args, **kwargs)
            finally:
                with timers._lock:
                    timers.cpu[label] += time.thread_time()

        setattr(owner, name, counted)


def slow_commits(delay_s: float) -> None:
    """Every transaction of the C-STORE path waits ``delay_s`` before its commit: a disk whose
    fsync is slow (a SAN, a network file system), which is where sharing commits pays. On SQLite
    that path's transaction is :meth:`Database.driver_transaction`, elsewhere :meth:`Database.begin`."""

    def slowed(transaction: Callable[[Database], contextlib.AbstractContextManager[Any]]
               ) -> Callable[[Database], contextlib.AbstractContextManager[Any]]:
        @contextlib.contextmanager
        def slow(self: Database) -> Iterator[Any]:
            with transaction(self) as conn:
                yield conn
                time.sleep(delay_s)

        return slow

    Database.begin = slowed(Database.begin)  # type: ignore[method-assign]
    Database.driver_transaction = slowed(Database.driver_transaction)  # type: ignore[method-assign]


def run(files: list[Path], associations: int, timers: Timers, work: Path, *, group: bool = True,
        db_url: str = "") -> dict[str, Any]:
    database = Database(db_url or f"sqlite:///{work / 'triphase.db'}")
    upgrade(database)
    settings = NodeSettings.model_validate({"port": 0, "quiet_period_s": 3600, "min_free_disk_mb": 0,
                                            "peers": (PeerSettings(name="bench", ae_title="BENCH"),)})
    repository = Repository(database)
    if not group:
        repository._known_study_writes._max_group = 1  # noqa: SLF001 - one row per transaction
    node = DicomNode(settings, spool.Spool(work / "spool"), repository, Collecting())
    node.start()
    try:
        parts = [files[i::associations] for i in range(associations)]
        before = os.times()
        start = time.perf_counter()
        senders = [subprocess.Popen([STORESCU, "-aet", "BENCH", "-aec", "TRIPHASE", "127.0.0.1", str(node.port),
                                     *map(str, part)], env=ENV) for part in parts if part]
        if any(sender.wait(timeout=600) for sender in senders):
            raise RuntimeError("storescu failed")
        seconds = time.perf_counter() - start
        after = os.times()
    finally:
        node.shutdown(grace_s=5)
        database.close()
    time.sleep(0.2)
    count = len(files)
    commits = repository._known_study_writes  # noqa: SLF001 - how many rows shared a commit
    return {
        "rows_per_commit": round(commits.items / max(commits.groups, 1), 2),
        "instances_per_s": round(count / seconds, 1),
        "ms_per_instance": round(seconds / count * 1000, 3),
        "process_cpu_ms_per_instance": {"user": round((after.user - before.user) / count * 1000, 3),
                                        "system": round((after.system - before.system) / count * 1000, 3)},
        "thread_cpu_ms_per_instance": {k: round(v / count * 1000, 3) for k, v in timers.cpu.items()},
        "stage_wall_ms": {k: {"median": round(statistics.median(v) * 1000, 3),
                              "mean": round(statistics.mean(v) * 1000, 3), "calls": len(v)}
                          for k, v in timers.wall.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--associations", type=int, default=1)
    parser.add_argument("--matrix", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--slow-commit-ms", type=float, default=0.0,
                        help="add this to every commit, as a disk with a slow fsync would")
    parser.add_argument("--db-url", default="", help="a PostgreSQL server (a new database for the run); "
                        "default: SQLite in the run's folder")
    parser.add_argument("--one-row-per-commit", action="store_true",
                        help="no group commit: each row in a transaction of its own")
    args = parser.parse_args()
    files = make_instances(instances_folder(args.matrix), args.instances, args.matrix)  # bench/ingest.py's
    if args.slow_commit_ms:
        slow_commits(args.slow_commit_ms / 1000)
    timers = Timers()
    for owner, name in STAGES:
        timers.wrap(owner, name)
    timers.count_thread_cpu(WakefulDUL, "run_reactor", "receiving (DUL) threads, which also serve C-STORE requests")
    timers.count_thread_cpu(Association, "_run_reactor", "association threads (other requests)")
    with (tempfile.TemporaryDirectory(prefix="ingest-profile-", dir=work_folder()) as work,
          fresh_database(args.db_url) as db_url):
        figures = run(files, args.associations, timers, Path(work), group=not args.one_row_per_commit, db_url=db_url)
    record = header("ingest_profile") | {"instances": args.instances, "matrix": args.matrix,
                                         "slow_commit_ms": args.slow_commit_ms,
                                         "database": "postgresql" if args.db_url else "sqlite",
                                         "group_commit": not args.one_row_per_commit,
                                         "associations": args.associations,
                                         "figures": figures}
    for key, value in figures.items():
        print(f"{key}: {value}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    variant = (f"-slow{args.slow_commit_ms:g}" if args.slow_commit_ms else "") + (
        "-onerow" if args.one_row_per_commit else "")
    print(f"written to {write_result(f'ingest-profile-{stamp}-a{args.associations}-m{args.matrix}{variant}', record)}")


if __name__ == "__main__":
    main()
