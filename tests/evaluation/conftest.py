"""A small audit database with studies, predictions, ground truth and readers (both backends)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from db.records import LesionPrediction
from db.repository import InstanceRecord, Repository
from db.states import JobState

CLASSES = ["early_hcc", "progressed_hcc"]
MODEL = "a1b2c3d4" * 8


def study_uid(k: int) -> str:
    return f"1.2.826.0.1.3680043.8.498.{k + 1}"


def add_study(repository: Repository, k: int, *, patient: str, accession: str | None = None) -> int:
    uid = study_uid(k)
    repository.record_instance(InstanceRecord(
        study_uid=uid, series_uid=f"{uid}.1", sop_instance_uid=f"{uid}.1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"{uid}/x.dcm", size_bytes=1, sha256="0" * 64,
        patient_id=patient, accession_number=accession or f"ACC{k}"), quiet_period_s=0, hard_cap_s=60)
    completed = repository.complete_study(uid)
    assert completed is not None
    return completed.job_id


def analyse(repository: Repository, job_id: int, lesions: list[dict], model: str = MODEL) -> None:
    repository.transition_job(job_id, JobState.QUEUED)
    repository.transition_job(job_id, JobState.RUNNING)
    predictions = [LesionPrediction(lesion_id=lesion["lesion_id"], label=lesion["label"], top_class=lesion["label"],
                                    probabilities=lesion["probabilities"], roi_source=lesion["roi_source"],
                                    slice_index=0) for lesion in lesions]
    repository.record_analysis(job_id, task="mri-ehcc", model=model, lesions=predictions)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


LABEL_HEADER = ["patient_id", "study_uid", "accession_number", "lesion_id", "label", "source",
                "center_x_mm", "center_y_mm", "center_z_mm", "size_mm"]
READ_HEADER = ["reader_id", "reader_group", "patient_id", "study_uid", "lesion_id", "label", "confidence"]


@pytest.fixture
def populated(repository: Repository, tmp_path: Path) -> Callable[..., dict]:
    """``n`` analysed studies (one or two lesions each), labels.csv and reads.csv on disk."""

    def build(n: int = 24, seed: int = 0, model: str = MODEL) -> dict:
        rng = np.random.default_rng(seed)
        labels_rows, read_rows = [], []
        for k in range(n):
            patient = f"P{k:03d}"
            job = add_study(repository, k, patient=patient)
            lesions = []
            for lesion in ("L1", "L2")[: 1 + (k % 2)]:
                truth = CLASSES[int(rng.uniform() < 0.5)]
                centre = 0.7 if truth == "progressed_hcc" else 0.3
                p_progressed = float(np.clip(centre + rng.normal(0, 0.2), 0.01, 0.99))
                label = CLASSES[int(p_progressed >= 0.5)] if abs(p_progressed - 0.5) > 0.05 else "indeterminate"
                lesions.append({"lesion_id": lesion, "label": label, "roi_source": "seg",
                                "probabilities": {"early_hcc": 1 - p_progressed, "progressed_hcc": p_progressed}})
                labels_rows.append([patient, study_uid(k), f"ACC{k}", lesion, truth, "pathology", 1.0, 2.0, 3.0, 15])
                readers = (("R1", "general", 0.6), ("R2", "abdominal", 0.8), ("R3", "abdominal", 0.75))
                for reader, group, accuracy in readers:
                    right = rng.uniform() < accuracy
                    call = truth if right else CLASSES[1 - CLASSES.index(truth)]
                    read_rows.append([reader, group, patient, study_uid(k), lesion, call,
                                      round(float(rng.uniform(0.55, 0.95)), 2)])
            analyse(repository, job, lesions, model=model)
        skipped = add_study(repository, n, patient="PX")
        repository.transition_job(skipped, JobState.SKIPPED, reason="incomplete: no arterial phase")
        return {"labels": write_csv(tmp_path / "labels.csv", LABEL_HEADER, labels_rows),
                "reads": write_csv(tmp_path / "reads.csv", READ_HEADER, read_rows),
                "lesions": len(labels_rows), "patients": n}

    return build
