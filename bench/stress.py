"""Stress: many studies through a real node and a four-process worker that sweeps ten times a second,
a busy pool process killed mid-run, on SQLite and on PostgreSQL, repeated.

The short version runs in the test suite (tests/results/test_stress.py). Each round here starts a
private Redis, dcmtk's storescp as the receiving PACS (unique file names, so every receipt is
kept), ``triphase node`` and ``triphase worker --concurrency P --sweep-s S``; sends N synthetic CT
studies one after the other; kills the pool process using the most CPU once a third of the jobs
are done; and waits for every job. It records per round: jobs, sent exactly once (one ``job.sent``
event), failed, stuck (not done at the deadline), lesions with more than one prediction row,
studies without exactly one distinct SR at the PACS, SR receipts (a send repeated after the kill
shows as a second receipt of the same SR), the worker log's "database is locked" and
IllegalTransition lines, and the wall time. Run from the repository root:

    python bench/stress.py [--studies 20] [--rounds 3] [--backends sqlite,postgresql] [--processes 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The node and worker processes run this checkout's code, whatever the virtual environment installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

import pydicom  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402

from bench.arrival import train  # noqa: E402
from bench.provenance import header, write_result  # noqa: E402
from db.engine import Database  # noqa: E402
from db.queries import audit_events  # noqa: E402
from db.schema import Job, Prediction  # noqa: E402
from node.scu import RemoteNode, SendResult, scan, send  # noqa: E402
from tests.conftest import PG_ADMIN_URL, free_port  # noqa: E402
from tests.processes import wait_for_port  # noqa: E402
from tests.results.conftest import pipeline_node, start_worker, stop_worker  # noqa: E402
from tests.results.test_broker_outage import PrivateRedis  # noqa: E402
from tests.results.test_stress import kill_busiest, pool_children  # noqa: E402

DONE = ("sent", "failed", "skipped", "shadowed")
STORESCP = "/usr/bin/storescp"  # by absolute path: a virtual environment puts pynetdicom's own first


class StoreSCP:
    """dcmtk's storescp keeping every object it receives under a unique file name."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = (self.folder.parent / "storescp.log").open("ab")
        self.proc = subprocess.Popen([STORESCP, "-aet", "DEMOPACS", "-od", str(self.folder), "+uf",
                                      str(self.port)], stdout=log, stderr=log)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def srs(self) -> tuple[dict[str, set[str]], int]:
        """Distinct SR instances per study, and every SR file received."""
        per_study: dict[str, set[str]] = {}
        receipts = 0
        for path in self.folder.iterdir():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if getattr(ds, "Modality", "") == "SR":
                per_study.setdefault(ds.StudyInstanceUID, set()).add(ds.SOPInstanceUID)
                receipts += 1
        return per_study, receipts


def postgres_database() -> tuple[str, Any]:
    """A fresh PostgreSQL database for one round, and how to drop it."""
    name = f"triphase_stress_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", drop


def states(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.scalars(select(Job.state)))


def count_round(database: Database, pacs: StoreSCP, log: Path, studies: int) -> dict[str, Any]:
    """What one round left behind, as counts that are all zero (or N) when nothing went wrong."""
    found = states(database)
    sent = Counter(e.job_id for e in audit_events(database, kind_prefix="job.sent"))
    with database.session() as session:
        duplicates = session.execute(select(func.count()).select_from(
            select(Prediction.job_id, Prediction.lesion_id).group_by(Prediction.job_id, Prediction.lesion_id)
            .having(func.count() > 1).subquery())).scalar_one()
    per_study, receipts = pacs.srs()
    text_of_log = log.read_text(errors="replace")
    return {"jobs": len(found), "sent": found.count("sent"),
            "sent_exactly_once": sum(1 for n in sent.values() if n == 1),
            "failed": found.count("failed"), "stuck": sum(1 for s in found if s not in DONE),
            "lesions_with_duplicate_predictions": duplicates,
            "studies_without_exactly_one_sr": studies - sum(1 for srs in per_study.values() if len(srs) == 1),
            "sr_receipts": receipts,
            "database_is_locked_lines": text_of_log.count("database is locked"),
            "illegal_transition_lines": text_of_log.count("IllegalTransition")}


def run_round(work: Path, artifact: Any, studies: list[Path], backend: str, args: argparse.Namespace) -> dict[str, Any]:
    broker = PrivateRedis(work)
    broker.start()
    pacs = StoreSCP(work / "pacs").start()
    db_url, drop = postgres_database() if backend == "postgresql" else (f"sqlite:///{work / 'node' / 'triphase.db'}",
                                                                         lambda: None)
    node = pipeline_node(work / "node", broker_url=f"redis://127.0.0.1:{broker.port}/0", artifact=artifact,
                         task="ct-histology", destination=("DEMOPACS", pacs.port), sender="SENDER",
                         completion_poll_s=0.1)
    node.db_url = "" if backend == "sqlite" else db_url
    node.start()
    log = work / "worker.log"
    worker = start_worker(node, log, concurrency=args.processes, sweep_s=args.sweep)
    database = Database(db_url)
    started = time.monotonic()
    killed = None
    try:
        for folder in studies:
            send(scan([folder], SendResult()), RemoteNode("TRIPHASE", "127.0.0.1", node.port), calling_ae="SENDER")
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            found = states(database)
            if killed is None and found.count("sent") >= len(studies) // 3 and "running" in found:
                killed = kill_busiest(pool_children(worker.pid))
            if len(found) >= len(studies) and all(s in DONE for s in found):
                break
            time.sleep(0.2)
        seconds = round(time.monotonic() - started, 1)
        return {"backend": backend, "seconds": seconds, "killed_pool_process": killed is not None,
                **count_round(database, pacs, log, len(studies))}
    finally:
        database.close()
        stop_worker(worker)
        node.kill()
        pacs.stop()
        broker.kill()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--sweep", type=float, default=0.1, help="--sweep-s of the worker")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds a round may take before its unfinished jobs count as stuck")
    args = parser.parse_args()
    from worker.synth.context import StudyOptions
    from worker.synth.run import generate_run

    report: dict[str, Any] = header("stress") | {
        "studies": args.studies, "worker_processes": args.processes, "sweep_s": args.sweep,
        "study": "4-phase CT with SEG, 4 x 16 slices at 48x48", "pacs": "dcmtk storescp (+uf)",
        "load_average_before": list(os.getloadavg()), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="triphase-stress-") as tmp:
        work = Path(tmp)
        artifact = train(work)
        generate_run(work / "studies", StudyOptions(task="ct-histology", seed=11, difficulty=0.2, slices=16,
                                                    matrix=48), args.studies, [])
        studies = sorted((work / "studies").glob("study-*"))
        for number in range(args.rounds):
            for backend in args.backends.split(","):
                round_dir = work / f"{backend}-{number}"
                round_dir.mkdir()
                result = run_round(round_dir, artifact, studies, backend, args)
                print(json.dumps(result), flush=True)
                report["rounds"].append({"round": number + 1, **result})
    report["load_average_after"] = list(os.getloadavg())
    rounds = report["rounds"]
    report["all_rounds_clean"] = all(
        r["sent_exactly_once"] == r["jobs"] == args.studies and r["failed"] == r["stuck"] == 0
        and r["lesions_with_duplicate_predictions"] == r["studies_without_exactly_one_sr"] == 0
        and r["database_is_locked_lines"] == r["illegal_transition_lines"] == 0 for r in rounds)
    print(json.dumps(report, indent=2))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"written to {write_result(f'stress-{stamp}', report)}")


if __name__ == "__main__":
    main()
