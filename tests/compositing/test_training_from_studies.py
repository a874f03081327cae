"""Training straight from DICOM studies + labels.csv builds composites by the inference path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.composite_folder import load_study_folder
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train-studies")
    generate_run(out, StudyOptions(task="mri-ehcc", seed=41, difficulty=0.1, slices=8, matrix=40, style="ge",
                                   extras=False, balanced=True), 6, [])
    return out


def test_study_folder_gives_labelled_composites(studies: Path) -> None:
    folder = load_study_folder(studies, size=48)
    assert len(folder.images) == 6 and all(image.shape == (48, 48, 3) for image in folder.images)
    assert sorted(set(folder.labels)) == ["early_hcc", "progressed_hcc"]
    assert len(set(folder.patient_ids)) == 6
    assert folder.provenance["channel_recipe"] == ["arterial", "t2_haste", "t1_in"]
    assert all(row["roi_source"] == "seg" for row in folder.rows)


def test_train_command_on_studies(studies: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    done = subprocess.run([triphase, "train", str(studies), "--task", "mri-ehcc", "--arch", "tinycnn",
                           "--mode", "finetune", "--epochs", "2", "--folds", "2", "--random-init", "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    [artifact] = list((tmp_path / "data" / "models").iterdir())
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["input"]["windowing"]["source"] == "built from DICOM studies by the inference path"
    assert manifest["training"]["data"]["lesions"] == 6 and manifest["weights_origin"]["kind"] == "random-init"
    assert summary["cv"]["mean"]["accuracy"] >= 0.0


def test_svm_on_synth_composites_learns(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Easy synthetic MRI: held-out macro-F1 well above the majority baseline (patient-level CV)."""
    from models.architectures import default_registry
    from models.training import TrainingConfig, train_model

    out = tmp_path_factory.mktemp("learnable")
    generate_run(out, StudyOptions(task="mri-ehcc", seed=8, difficulty=0.1, slices=10, matrix=64, style="mixed",
                                   extras=False, balanced=True), 40, [])
    folder = load_study_folder(out, size=64)
    config = TrainingConfig(architecture="tinycnn", mode="svm", folds=3, seed=0, random_init=True, device="cpu")
    trained = train_model(folder.images, folder.labels, folder.patient_ids, classes=["early_hcc", "progressed_hcc"],
                          config=config, registry=default_registry(), weights_dir=tmp_path)
    cv = trained.cv
    assert cv["mean"]["macro_f1"] >= cv["majority_baseline_mean"]["macro_f1"] + 0.25, cv["mean"]
