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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from db.engine import Database
from db.migrate import upgrade
from db.queries import StudyJob, audit_events, job_predictions, job_states, study_jobs
from db.repository import Repository
from db.schema import Prediction
from db.settings import load_section
from models.architectures import default_registry
from models.artifact import Artifact, save_trained
from models.evaluation.baseline import majority_class
from models.evaluation.metrics import accuracy_score
from models.tasks import known_task
from models.training import TrainingConfig, train_model
from node.dispatch import OutboxOnly
from node.folder_store import FolderStore
from node.scp import DicomNode
from node.scu import RemoteNode, SendResult, scan, send
from node.settings import NodeSettings, PeerSettings
from node.spool import Spool
from worker.composite_folder import load_study_folder
from worker.embedded import OutboxRunner
from worker.grouping import load_rules
from worker.grouping.readiness import GroupingRoleCheck
from worker.jobs import WorkerContext
from worker.results.writeback import Destination
from worker.synth.context import StudyOptions
from worker.synth.multiframe import convert_study
from worker.synth.run import generate_run
from worker.synth.study import StudyRecord

TASK = "ct-histology"
FINISHED = {"sent", "shadowed", "skipped", "failed"}
NO_TRUTH = "(no truth)"  # a lesion the truth file does not name: its prediction counts as wrong

Say = Callable[[str], None]
StoredObjects = Mapping[str, Sequence[tuple[str, Path, Dataset]]]  # study UID -> (modality, path, dataset)


class DemoLesion(TypedDict):
    lesion_id: str
    predicted: str
    truth: str | None
    probabilities: dict[str, Any]
    roi: str


class DemoObject(TypedDict):
    object: str  # "SR" or "SC"
    path: str


class DemoStudy(TypedDict):
    """One study as demo.json and the printout show it."""

    study_uid: str
    job: int
    completed_by: str | None  # the rule that completed the study revision of this job
    state: str
    reason: str | None
    roles: dict[str, str | None]  # role -> series description
    lesions: list[DemoLesion]
    stored: list[DemoObject]


@dataclass
class DemoResult:
    folder: Path
    model: str
    studies: list[DemoStudy] = field(default_factory=list)
    accuracy: float | None = None
    majority_baseline: float | None = None
    elapsed_s: float = 0.0


def _write_studies(folder: Path, train_studies: int, demo_studies: int, seed: int, *, multiframe: bool) -> None:
    def options(run_seed: int) -> StudyOptions:
        return StudyOptions(task=TASK, seed=run_seed, difficulty=0.15, balanced=True, slices=16, matrix=64,
                            style="mixed", extras=True)

    generate_run(folder / "training", options(seed), train_studies, [])
    # Multi-frame: each incoming series becomes one Legacy Converted Enhanced instance, as an archive sends it.
    def convert(record: StudyRecord) -> None:
        convert_study(record.folder)

    generate_run(folder / "incoming", options(seed + 1), demo_studies, [], on_study=convert if multiframe else None)


def _train_model(studies: Path, models_dir: Path, say: Say) -> Artifact:
    folder = load_study_folder(studies, size=64)
    config = TrainingConfig(architecture="tinycnn", mode="svm", folds=3, seed=0, random_init=True, device="cpu")
    definition = known_task(TASK)
    if definition is None:
        raise LookupError(f"unknown task {TASK}")
    model = train_model(folder.images, folder.labels, folder.patient_ids, classes=list(definition.classes),
                        config=config, registry=default_registry(), weights_dir=models_dir)
    artifact = save_trained(model, models_dir, task=TASK, channel_recipe=folder.provenance["channel_recipe"],
                            windowing=folder.provenance["windowing"])
    cv = model.cv["mean"]
    say(f"  cross-validated on {len(folder.images)} lesions of {len(set(folder.patient_ids))} patients: "
        f"accuracy {cv['accuracy']:.2f}, balanced accuracy {cv['balanced_accuracy']:.2f}, "
        f"majority-class baseline {model.cv['majority_baseline_mean']['accuracy']:.2f}")
    return artifact


def _wait_for_jobs(database: Database, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = job_states(database)
        if len(states) >= count and all(s in FINISHED for s in states):
            return
        time.sleep(0.3)


def _run_loop(folder: Path, database: Database, artifact: Artifact, *, demo_studies: int, quiet_period_s: float,
              settle_s: float, timeout_s: float, say: Say) -> None:
    """Node, embedded worker and stand-in PACS up; the incoming studies sent; wait for their jobs.

    A study completes when the grouping rules see its phases and its SEG, once nothing has arrived
    for ``settle_s``; the quiet period is only the fallback, so a busy worker slowing the node
    down never cuts a study in two.
    """
    repository = Repository(database)
    pacs = FolderStore(folder / "pacs").start()
    settings = load_section(NodeSettings, port=0, quiet_period_s=quiet_period_s, settle_s=settle_s,
                            completion_poll_s=0.2, min_free_disk_mb=0,
                            peers=(PeerSettings.model_validate({"name": "demo-pacs", "ae_title": "DEMOPACS"}),))
    rules = load_rules()
    node = DicomNode(settings, Spool(folder / "spool"), repository, OutboxOnly(), role_check=GroupingRoleCheck(rules))
    context = WorkerContext(repository=repository, rules=rules, spool_root=folder / "spool",
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
        _wait_for_jobs(database, demo_studies, timeout_s)
    finally:
        runner.stop()
        node.shutdown(grace_s=0)
        pacs.stop()


def _truth(labels_csv: Path) -> dict[tuple[str, str], str]:
    """(study UID, lesion id) -> the synthetic truth's label."""
    with labels_csv.open() as handle:
        return {(row["study_uid"], row["lesion_id"]): row["label"] for row in csv.DictReader(handle)}


def _stored_objects(pacs: Path) -> dict[str, list[tuple[str, Path, Dataset]]]:
    stored: dict[str, list[tuple[str, Path, Dataset]]] = {}
    for path in pacs.rglob("*.dcm"):
        ds = dcmread(path)
        stored.setdefault(str(ds.StudyInstanceUID), []).append((str(ds.Modality), path, ds))
    return stored


def _completed_by_job(database: Database) -> dict[int | None, str]:
    """The rule that completed the study revision of each job."""
    return {e.job_id: str(e.detail.get("by")) for e in audit_events(database, kind_prefix="study.complete")
            if e.detail and e.detail.get("by")}


def _roles_by_job(database: Database) -> dict[int | None, dict[str, Any]]:
    """The roles each job's analysis found (the latest audit event that names them)."""
    return {e.job_id: e.detail.get("roles", {}) for e in audit_events(database, kind_prefix="job.")
            if e.detail and "roles" in e.detail}


def _study_entry(row: StudyJob, roles: Mapping[str, Any], stored: StoredObjects,
                 predictions: Mapping[tuple[int, str], Prediction], truth: Mapping[tuple[str, str], str],
                 png: Path, completed_by: str | None) -> DemoStudy:
    entry = DemoStudy(study_uid=row.study_uid, job=row.job_id, completed_by=completed_by, state=row.state,
                      reason=row.reason,
                      roles={role: (found or {}).get("description") for role, found in roles.items()},
                      lesions=[], stored=[])
    for modality, path, ds in stored.get(row.study_uid, []):
        entry["stored"].append(DemoObject(object="SR" if modality == "SR" else "SC", path=str(path)))
        if modality != "SR":
            Image.fromarray(ds.pixel_array).save(png / f"{row.job_id}_SC_{ds.InstanceNumber}.png")
    for (job_id, lesion_id), prediction in predictions.items():
        if job_id == row.job_id:
            entry["lesions"].append(DemoLesion(lesion_id=lesion_id, predicted=prediction.label,
                                               truth=truth.get((row.study_uid, lesion_id)),
                                               probabilities=prediction.probabilities, roi=prediction.roi_source))
    return entry


def _evaluate(demo: DemoResult, truth: Mapping[tuple[str, str], str]) -> None:
    """Accuracy over the predicted lesions, beside always answering the truth's most frequent label."""
    lesions = [lesion for study in demo.studies for lesion in study["lesions"]]
    if not lesions:
        return
    demo.accuracy = accuracy_score([lesion["truth"] or NO_TRUTH for lesion in lesions],
                                   [lesion["predicted"] for lesion in lesions])
    labels = list(truth.values())
    demo.majority_baseline = accuracy_score(labels, [majority_class(labels)] * len(labels))


def _collect(folder: Path, database: Database, model: str) -> DemoResult:
    """Each study's job, roles, predictions beside the truth, and the objects the stand-in PACS holds."""
    demo = DemoResult(folder, model)
    truth = _truth(folder / "incoming" / "labels.csv")
    png = folder / "png"
    png.mkdir()
    predictions = {(p.job_id, p.lesion_id): p for p in job_predictions(database)}
    roles_by_job = _roles_by_job(database)
    completed_by = _completed_by_job(database)
    stored = _stored_objects(folder / "pacs")
    demo.studies = [_study_entry(row, roles_by_job.get(row.job_id, {}), stored, predictions, truth, png,
                                 completed_by.get(row.job_id))
                    for row in study_jobs(database)]
    _evaluate(demo, truth)
    return demo


def run_demo(folder: Path, *, train_studies: int = 25, demo_studies: int = 4, seed: int = 0,
             quiet_period_s: float = 30.0, settle_s: float = 3.0, timeout_s: float = 150.0,
             multiframe: bool = False, say: Say = print) -> DemoResult:
    started = time.monotonic()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    form = " as multi-frame Legacy Converted Enhanced CT" if multiframe else ""
    say(f"1. Writing synthetic liver CT studies (pre-contrast, arterial, portal, delayed){form} to {folder}")
    _write_studies(folder, train_studies, demo_studies, seed, multiframe=multiframe)
    say("2. Training a demonstration model: a tiny CNN from RANDOM INITIALISATION (no ImageNet weights are used\n"
        "   here) with an SVM on its features. It shows the pipeline; it does not reproduce the papers' accuracy.")
    artifact = _train_model(folder / "training", folder / "models", say)
    database = Database(f"sqlite:///{folder / 'triphase.db'}")
    upgrade(database)
    _run_loop(folder, database, artifact, demo_studies=demo_studies, quiet_period_s=quiet_period_s,
              settle_s=settle_s, timeout_s=timeout_s, say=say)
    demo = _collect(folder, database, artifact.hash)
    demo.elapsed_s = time.monotonic() - started
    (folder / "demo.json").write_text(json.dumps({"model": demo.model, "studies": demo.studies,
                                                  "accuracy": demo.accuracy, "elapsed_s": demo.elapsed_s},
                                                 indent=2, default=str))
    return demo
