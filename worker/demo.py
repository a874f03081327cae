"""``triphase demo``: the whole loop on one machine with no servers, in a few minutes.

Synthetic liver CT studies are generated; a small model is trained on some of them; the node, an
embedded worker and a stand-in PACS (a folder) are started; the other studies are sent to the node
over DICOM like a PACS would; each study completes, is grouped, composited, classified, and its
SR and Secondary Capture are stored in the stand-in PACS. Then the results are compared with the
synthetic truth. Every object produced says it comes from an algorithm and is not for diagnostic use.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.engine import Database
from db.migrate import upgrade
from db.queries import audit_events
from db.repository import Repository
from db.schema import Job, Prediction, Study
from node.dispatch import OutboxOnly
from node.folder_store import FolderStore
from node.scp import DicomNode
from node.scu import RemoteNode, SendResult, scan, send
from node.settings import NodeSettings, PeerSettings
from node.spool import Spool
from worker.embedded import OutboxRunner
from worker.grouping import load_rules
from worker.jobs import WorkerContext
from worker.results.writeback import Destination

TASK = "ct-histology"
FINISHED = {"sent", "shadowed", "skipped", "failed"}


@dataclass
class DemoResult:
    folder: Path
    model: str
    studies: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float | None = None
    majority_baseline: float | None = None
    elapsed_s: float = 0.0


def _train_model(studies: Path, models_dir: Path, say: Callable[[str], None]) -> Any:
    from models.architectures import default_registry  # noqa: PLC0415
    from models.artifact import save_trained  # noqa: PLC0415
    from models.tasks import known_task  # noqa: PLC0415
    from models.training import TrainingConfig, train_model  # noqa: PLC0415
    from worker.composite_folder import load_study_folder  # noqa: PLC0415

    folder = load_study_folder(studies, size=64)
    config = TrainingConfig(architecture="tinycnn", mode="svm", folds=3, seed=0, random_init=True, device="cpu")
    definition = known_task(TASK)
    assert definition is not None
    model = train_model(folder.images, folder.labels, folder.patient_ids, classes=list(definition.classes),
                        config=config, registry=default_registry(), weights_dir=models_dir)
    artifact = save_trained(model, models_dir, task=TASK, channel_recipe=folder.provenance["channel_recipe"],
                            windowing=folder.provenance["windowing"])
    cv = model.cv["mean"]
    say(f"  cross-validated on {len(folder.images)} lesions of {len(set(folder.patient_ids))} patients: "
        f"accuracy {cv['accuracy']:.2f}, balanced accuracy {cv['balanced_accuracy']:.2f}, "
        f"majority-class baseline {model.cv['majority_baseline_mean']['accuracy']:.2f}")
    return artifact


def run_demo(folder: Path, *, train_studies: int = 25, demo_studies: int = 4, seed: int = 0,
             quiet_period_s: float = 1.5, timeout_s: float = 150.0, say: Callable[[str], None] = print) -> DemoResult:
    from PIL import Image  # noqa: PLC0415
    from pydicom import dcmread  # noqa: PLC0415

    from worker.synth.context import StudyOptions  # noqa: PLC0415
    from worker.synth.run import generate_run  # noqa: PLC0415

    started = time.monotonic()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    size = dict(slices=16, matrix=64, style="mixed", extras=True)
    say(f"1. Writing synthetic liver CT studies (pre-contrast, arterial, portal, delayed) to {folder}")
    generate_run(folder / "training", StudyOptions(task=TASK, seed=seed, difficulty=0.15, balanced=True, **size),
                 train_studies, [])
    generate_run(folder / "incoming", StudyOptions(task=TASK, seed=seed + 1, difficulty=0.15, balanced=True, **size),
                 demo_studies, [])
    say("2. Training a demonstration model: a tiny CNN from RANDOM INITIALISATION (no ImageNet weights are used\n"
        "   here) with an SVM on its features. It shows the pipeline; it does not reproduce the papers' accuracy.")
    artifact = _train_model(folder / "training", folder / "models", say)

    database = Database(f"sqlite:///{folder / 'triphase.db'}")
    upgrade(database)
    repository = Repository(database)
    pacs = FolderStore(folder / "pacs").start()
    settings = NodeSettings(port=0, quiet_period_s=quiet_period_s, completion_poll_s=0.2, min_free_disk_mb=0,
                            peers=(PeerSettings(name="demo-pacs", ae_title="DEMOPACS"),))
    node = DicomNode(settings, Spool(folder / "spool"), repository, OutboxOnly())
    context = WorkerContext(repository=repository, rules=load_rules(), spool_root=folder / "spool",
                            results_root=folder / "results",
                            destinations=[Destination("demo-pacs", "DEMOPACS", "127.0.0.1", pacs.port)],
                            models={TASK: str(artifact.path)}, calling_ae=settings.ae_title, data_dir=folder,
                            models_dir=folder / "models", device="cpu")
    runner = OutboxRunner(context)
    node.start()
    runner.start()
    try:
        say(f"3. Node {settings.ae_title} listening on port {node.port}; stand-in PACS on port {pacs.port}; "
            f"sending {demo_studies} studies over DICOM")
        result = SendResult()
        files = scan(sorted((folder / "incoming").glob("study-*")), result)
        send(files, RemoteNode(settings.ae_title, "127.0.0.1", node.port), calling_ae="DEMOPACS", result=result)
        say(f"   {len(result.sent) - len(result.refused)} instances stored by the node; waiting for the analyses")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with database.session() as session:
                states = session.scalars(select(Job.state)).all()
            if len(states) >= demo_studies and all(s in FINISHED for s in states):
                break
            time.sleep(0.3)
    finally:
        runner.stop()
        node.shutdown(grace_s=0)
        pacs.stop()

    demo = DemoResult(folder, artifact.hash)
    truth = {}
    with (folder / "incoming" / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            truth[(row["study_uid"], row["lesion_id"])] = row["label"]
    png = folder / "png"
    png.mkdir()
    with database.session() as session:
        rows = session.execute(select(Study.study_uid, Job.id, Job.state, Job.reason).join(Job)).all()
        predictions = {(p.job_id, p.lesion_id): p for p in session.scalars(select(Prediction))}
    roles_by_job = {e.job_id: (e.detail or {}).get("roles", {}) for e in audit_events(database, kind_prefix="job.")
                    if e.detail and "roles" in e.detail}
    stored = {}
    for path in (folder / "pacs").rglob("*.dcm"):
        ds = dcmread(path)
        stored.setdefault(str(ds.StudyInstanceUID), []).append((str(ds.Modality), path, ds))
    correct = total = 0
    for study_uid, job_id, state, reason in rows:
        entry: dict[str, Any] = {"study_uid": study_uid, "job": job_id, "state": state, "reason": reason,
                                 "roles": {role: (found or {}).get("description") for role, found in
                                           roles_by_job.get(job_id, {}).items()},
                                 "lesions": [], "stored": []}
        for modality, path, ds in stored.get(study_uid, []):
            entry["stored"].append({"object": "SR" if modality == "SR" else "SC", "path": str(path)})
            if modality != "SR":
                Image.fromarray(ds.pixel_array).save(png / f"{job_id}_SC_{ds.InstanceNumber}.png")
        for (pjob, lesion_id), prediction in predictions.items():
            if pjob != job_id:
                continue
            expected = truth.get((study_uid, lesion_id))
            entry["lesions"].append({"lesion_id": lesion_id, "predicted": prediction.label, "truth": expected,
                                     "probabilities": prediction.probabilities, "roi": prediction.roi_source})
            total += 1
            correct += int(prediction.label == expected)
        demo.studies.append(entry)
    labels = list(truth.values())
    if total:
        demo.accuracy = correct / total
        demo.majority_baseline = max(labels.count(label) for label in set(labels)) / len(labels)
    demo.elapsed_s = time.monotonic() - started
    (folder / "demo.json").write_text(json.dumps({"model": demo.model, "studies": demo.studies,
                                                  "accuracy": demo.accuracy, "elapsed_s": demo.elapsed_s},
                                                 indent=2, default=str))
    return demo
