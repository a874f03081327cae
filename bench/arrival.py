"""Arrival-to-result latency and batch throughput, on real Redis, Orthanc, node and workers.

Latency: Orthanc pushes one 4-phase synthetic CT study (with its SEG) to the node; the clock runs
from the end of the push (the last instance is stored) to the SR appearing in Orthanc. The study
completes by its roles (``settle_s`` after the last instance; the quiet period is a 30 s fallback
that would show in the figure), so there is nothing to subtract.

Throughput: a folder of studies is batch-imported and analysed with 1 and with 2 worker
processes; studies per hour until every job is sent. Run from the repository root:

    python bench/arrival.py [--studies 6] [--slices 40] [--matrix 256] [--settle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from bench.provenance import header, write_result  # noqa: E402
from db.engine import Database  # noqa: E402
from db.schema import Job, Study  # noqa: E402
from tests.processes import Orthanc  # noqa: E402
from tests.results.conftest import pipeline_node, start_worker, stop_worker  # noqa: E402
from tests.results.test_broker_outage import PrivateRedis  # noqa: E402

QUIET_S = 30.0  # the fallback: a study completed by roles never waits for it


def train(folder: Path) -> object:
    from models.architectures import default_registry
    from models.artifact import save_trained
    from models.training import TrainingConfig, train_model
    from worker.composite_folder import load_study_folder
    from worker.synth.context import StudyOptions
    from worker.synth.run import generate_run

    generate_run(folder / "train", StudyOptions(task="ct-histology", seed=3, difficulty=0.2, slices=16, matrix=64,
                                                balanced=True), 20, [])
    data = load_study_folder(folder / "train", size=64)
    model = train_model(data.images, data.labels, data.patient_ids,
                        classes=["early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"],
                        config=TrainingConfig(architecture="tinycnn", mode="svm", folds=3, random_init=True,
                                              device="cpu"),
                        registry=default_registry(), weights_dir=folder)
    return save_trained(model, folder / "models", task="ct-histology",
                        channel_recipe=data.provenance["channel_recipe"], windowing=data.provenance["windowing"])


def wait_jobs(database: Database, count: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with database.session() as session:
            states = session.scalars(select(Job.state)).all()
        if len(states) >= count and all(s in ("sent", "failed", "skipped", "shadowed") for s in states):
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError("jobs did not finish")


def push_and_wait(orthanc: Orthanc, folder: Path) -> float:
    """Seconds from the end of Orthanc's push of one study to its SR and SC being in Orthanc."""
    study = orthanc.upload(sorted(folder.glob("*.dcm")))
    before = len(orthanc.get(f"/studies/{study}/instances"))
    orthanc.post("/modalities/node/store", study)
    pushed = time.monotonic()
    while len(orthanc.get(f"/studies/{study}/instances")) < before + 2:
        time.sleep(0.05)
        if time.monotonic() - pushed > 300:
            raise TimeoutError("no result in Orthanc")
    return round(time.monotonic() - pushed, 2)


def batch_rate(node: Any, work: Path, processes: int, studies: int) -> float:
    """Studies per hour through ``triphase batch import`` with ``processes`` worker processes."""
    node.write_config()
    log = (work / f"w{processes}.log").open("ab")
    worker = subprocess.Popen([str(Path(sys.executable).with_name("triphase")), "worker",
                               "--concurrency", str(processes), "--sweep-s", "0.5"],
                              env=node.env(), stdout=log, stderr=log)
    time.sleep(4)
    started = time.monotonic()
    node.cli("batch", "import", str(work / "studies"), timeout=600)
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    elapsed = time.monotonic() - started + wait_jobs(database, studies, 900)
    database.close()
    stop_worker(worker)
    return round(studies / elapsed * 3600, 1)


def completed_by(database: Database) -> list[str | None]:
    """The rule that completed each study (``roles`` unless the quiet period had to decide)."""
    with database.session() as session:
        rules = [None if by is None else str(by) for by in session.scalars(select(Study.completed_by))]
    database.close()
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--settle", type=float, default=5.0, help="[node] settle_s")
    args = parser.parse_args()
    from worker.synth.context import StudyOptions
    from worker.synth.run import generate_run

    report: dict[str, object] = header("arrival") | {
        "study": f"4-phase CT, 4 x {args.slices} slices at {args.matrix}x{args.matrix}",
        "settle_s": args.settle, "quiet_period_s": QUIET_S, "load_average_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="triphase-bench-") as tmp:
        work = Path(tmp)
        artifact = train(work)
        generate_run(work / "studies", StudyOptions(task="ct-histology", seed=9, difficulty=0.2, slices=args.slices,
                                                    matrix=args.matrix, extras=False), args.studies, [])
        broker = PrivateRedis(work)
        broker.start()
        orthanc = Orthanc(work / "orthanc")
        try:
            # Latency: one study pushed by Orthanc.
            node = pipeline_node(work / "node", broker_url=f"redis://127.0.0.1:{broker.port}/0", artifact=artifact,
                                 task="ct-histology", destination=(orthanc.aet, orthanc.dicom_port),
                                 sender=orthanc.aet, quiet_period_s=QUIET_S, settle_s=args.settle)
            orthanc.modalities = {"node": ["TRIPHASE", "127.0.0.1", node.port]}
            orthanc.start()
            node.start()
            worker = start_worker(node, work / "worker.log")
            time.sleep(4)
            for label, folder in zip(("cold", "warm"), sorted((work / "studies").glob("study-*"))[:2], strict=True):
                # cold: the worker process imports torch and loads the model on its first task
                report[f"latency_s_last_instance_to_sr_{label}"] = push_and_wait(orthanc, folder)
            report["completed_by"] = completed_by(Database(f"sqlite:///{node.data_dir / 'triphase.db'}"))
            report["load_average_after_latency"] = list(os.getloadavg())
            stop_worker(worker)
            node.kill()
            # Throughput: batch import with 1 and 2 worker processes.
            for processes in (1, 2):
                node = pipeline_node(work / f"batch{processes}", broker_url=f"redis://127.0.0.1:{broker.port}/0",
                                     artifact=artifact, task="ct-histology",
                                     destination=(orthanc.aet, orthanc.dicom_port), sender="BATCH")
                report[f"batch_studies_per_hour_{processes}_worker"] = batch_rate(node, work, processes, args.studies)
        finally:
            orthanc.stop()
            broker.kill()
    print(json.dumps(report, indent=2))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    print(f"written to {write_result(f'arrival-{stamp}', report)}")


if __name__ == "__main__":
    main()
