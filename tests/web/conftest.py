"""A console over a real audit database holding one of everything the pages show."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from db.engine import Database
from db.records import LesionPrediction
from db.repository import InstanceRecord, Repository
from db.states import JobState
from db.vocabulary import CompletedBy, Severity
from models.artifact import FORMAT
from worker.web.app import Console, create_app
from worker.web.settings import WebSettings

PATIENT_ID = "PAT-SECRET-4711"
ACCESSION = "ACC-SECRET-99"
XSS_DESCRIPTION = "<script>alert('series')</script>"
XSS_AE = "<svg onload=x>"
TOKEN = "correct horse battery staple"
STUDY_SENT = "1.2.826.0.1.3680043.10.1"  # analysed, send failed
STUDY_RECEIVING = "1.2.826.0.1.3680043.10.2"
STUDY_SKIPPED = "1.2.826.0.1.3680043.10.3"
MODEL = hashlib.sha256(b"model").hexdigest()
CLIENT = ("192.0.2.7", 51000)


@dataclass(frozen=True)
class Scenario:
    database: Database
    repository: Repository
    failed_job: int
    skipped_job: int
    models_dir: Path
    reports_dir: Path
    outside_file: Path


def _instance(study: str, series_index: int, number: int, description: str, ae: str) -> InstanceRecord:
    series = f"{study}.{series_index}"
    sop = f"{series}.{number}"
    return InstanceRecord(study_uid=study, series_uid=series, sop_instance_uid=sop,
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.2", transfer_syntax_uid="1.2.840.10008.1.2.1",
                          path=f"{study}/{series}/{sop}.dcm", size_bytes=100, sha256="0" * 64,
                          patient_id=PATIENT_ID, accession_number=ACCESSION, modality="CT",
                          series_number=series_index, series_description=description, calling_ae=ae)


def _receive(repository: Repository, study: str, descriptions: list[str], ae: str) -> None:
    for index, description in enumerate(descriptions, start=1):
        for number in (1, 2):
            repository.record_instance(_instance(study, index, number, description, ae),
                                       quiet_period_s=3600, hard_cap_s=7200)


def _analysed_then_send_failed(repository: Repository) -> int:
    _receive(repository, STUDY_SENT, [XSS_DESCRIPTION, "Portal venous 1.5mm"], XSS_AE)
    completed = repository.complete_study(STUDY_SENT, by=CompletedBy.MANUAL)
    assert completed is not None
    job = completed.job_id
    repository.transition_job(job, JobState.QUEUED)
    repository.transition_job(job, JobState.RUNNING)
    lesions = [LesionPrediction(f"L{i}", label, label, {"benign": 0.8, "malignant": 0.2}, "annotation", 3)
               for i, label in enumerate(["benign", "malignant", "indeterminate"], start=1)]
    roles = {"arterial": {"series": f"{STUDY_SENT}.1", "acquisition_number": 1, "description": XSS_DESCRIPTION},
             "portal": {"series": f"{STUDY_SENT}.2", "acquisition_number": 2, "description": "Portal venous 1.5mm"},
             "delayed": None}
    repository.record_analysis(job, task="ct-liver", model=MODEL, lesions=lesions, detail={"roles": roles})
    repository.audit("send.failed", "PACS refused the association", severity=Severity.ERROR, study_uid=STUDY_SENT,
                     job_id=job, detail={"destination": "pacs-main", "state": "failed", "attempts": 3,
                                         "statuses": {}, "reason": "association rejected: called AE unknown"})
    repository.transition_job(job, JobState.FAILED, reason="association rejected: called AE unknown")
    return job


def _skipped(repository: Repository) -> int:
    _receive(repository, STUDY_SKIPPED, ["Arterial"], "MODALITY2")
    completed = repository.complete_study(STUDY_SKIPPED, by=CompletedBy.MANUAL)
    assert completed is not None
    repository.transition_job(completed.job_id, JobState.QUEUED)
    repository.transition_job(completed.job_id, JobState.RUNNING)
    repository.transition_job(completed.job_id, JobState.SKIPPED, reason="portal venous phase missing",
                              roles={"arterial": {"series": f"{STUDY_SKIPPED}.1", "description": "Arterial"},
                                     "portal": None})
    return completed.job_id


def _refusals(repository: Repository) -> None:
    repository.audit("instance.refused", "SOP class not accepted", severity=Severity.WARNING,
                     sop_instance_uid="1.2.3.4.5", detail={"status": "0xA900"})
    repository.reject_association(calling_ae="STRANGER", called_ae="TRIPHASE", address="198.51.100.9", port=104,
                                  reason="calling AE title not recognised")
    repository.audit("connection.refused", "from 203.0.113.5: 3 tls-handshake-failed", severity=Severity.WARNING,
                     detail={"address": "203.0.113.5"})


def _truth(repository: Repository) -> None:
    repository.import_truth([
        {"patient_id": PATIENT_ID, "study_uid": STUDY_SENT, "accession_number": None, "lesion_id": lesion,
         "label": label, "source": "pathology", "center_x_mm": None, "center_y_mm": None, "center_z_mm": None,
         "size_mm": None}
        for lesion, label in (("L1", "benign"), ("L2", "benign"), ("L3", "malignant"))], file="labels.csv")


def _model(models_dir: Path) -> None:
    folder = models_dir / MODEL
    folder.mkdir(parents=True)
    manifest = {
        "format": FORMAT, "task": "ct-liver", "classes": ["benign", "malignant"], "architecture": "resnet18",
        "mode": "finetune", "weights_origin": {"kind": "imagenet", "file_name": "resnet18.pth", "sha256": "ab" * 32},
        "random_init": False, "warnings": [],
        "training": {"data": {"lesions": 120, "patients": 80, "lesions_per_class": {"benign": 70, "malignant": 50}}},
        "cv": {"folds": 5, "split": "patient", "out_of_fold": {"accuracy": 0.8, "balanced_accuracy": 0.78,
                                                             "macro_f1": 0.77},
               "mean": {"accuracy": 0.79, "balanced_accuracy": 0.77, "macro_f1": 0.76},
               "majority_baseline_mean": {"accuracy": 0.58, "balanced_accuracy": 0.5, "macro_f1": 0.37},
               "per_fold": [{"metrics": {"accuracy": a, "balanced_accuracy": a, "macro_f1": a}} for a in (0.7, 0.9)]},
        "calibration": {"method": "temperature", "temperature": 1.31, "out_of_fold_log_loss": 0.41},
        "abstention_threshold": 0.6, "files": {}, "created_at": "2025-01-02T03:04:05+00:00",
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def _reports(root: Path) -> tuple[Path, Path]:
    reports = root / "reports"
    (reports / "2025-01-run").mkdir(parents=True)
    (reports / "2025-01-run" / "report.html").write_text("<html><body><h1>triphase evaluation</h1></body></html>")
    outside = root / "secret.html"
    outside.write_text("<p>outside the reports folder</p>")
    (reports / "link.html").symlink_to(outside)
    return reports, outside


@pytest.fixture
def scenario(sqlite_database: Database, tmp_path: Path) -> Scenario:
    return build_scenario(sqlite_database, tmp_path)


def build_scenario(database: Database, root: Path) -> Scenario:
    repository = Repository(database)
    failed = _analysed_then_send_failed(repository)
    _receive(repository, STUDY_RECEIVING, ["Arterial"], "MODALITY1")
    skipped = _skipped(repository)
    _refusals(repository)
    _truth(repository)
    _model(root / "models")
    reports, outside = _reports(root)
    return Scenario(database, repository, failed, skipped, root / "models", reports, outside)


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def client_for(scenario: Scenario) -> ClientFactory:
    """A test client of the console over the scenario, with the given ``[web]`` settings."""

    def make(*, token: str = TOKEN, show_patient: bool = False) -> TestClient:
        return client_over(scenario, token=token, show_patient=show_patient)

    return make


def client_over(scenario: Scenario, *, token: str = TOKEN, show_patient: bool = False) -> TestClient:
    settings = WebSettings(token=SecretStr(token), show_patient=show_patient)
    console = Console(scenario.database, settings, scenario.models_dir, scenario.reports_dir,
                      {"ct-liver": MODEL[:12]})
    return TestClient(create_app(console), client=CLIENT)
