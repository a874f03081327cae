"""Both experiments end to end on a tiny synthetic configuration (random-init tiny CNN + SVM)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from models.evaluation.summary import BootstrapSettings
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

SETTINGS = BootstrapSettings(n_resamples=50, seed=0)


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("experiment-studies")
    generate_run(out, StudyOptions(task="mri-ehcc", seed=5, difficulty=0.1, slices=8, matrix=40, style="ge",
                                   extras=False, balanced=True), 16, [])
    return out


def _config():
    from models.training import TrainingConfig
    from models.transforms import NO_AUGMENTATION

    return TrainingConfig(architecture="tinycnn", mode="svm", folds=2, seed=0, random_init=True, device="cpu",
                          input_size=32, augmentation=NO_AUGMENTATION, svm_inner_folds=2)


def test_misregistration_table(studies: Path, tmp_path: Path) -> None:
    from worker.evaluation.experiments import load_data, misregistered, misregistration_experiment, write_experiment

    data = load_data(studies, size=32, task="mri-ehcc")
    assert len(data.images) == 16
    moved = misregistered(data.images[0], "shift", 3, channel=0)
    assert not np.array_equal(moved[:, :, 0], misregistered(data.images[0], "shift", 0, channel=0)[:, :, 0])
    assert np.array_equal(moved[:, :, 1:], misregistered(data.images[0], "shift", 0, channel=0)[:, :, 1:])
    degrees = {"shift": [0.0, 4.0], "rotate": [10.0], "skew": [0.0, 15.0]}
    result = misregistration_experiment(data, degrees=degrees, channel=0, config=_config(), folds=2,
                                        weights_dir=tmp_path, settings=SETTINGS)
    rows = result["rows"]
    assert [(r["transform"], r["degree"]) for r in rows] == [(t, d) for t, ds in degrees.items() for d in ds]
    registered = result["registered"]
    for row in rows:
        if row["degree"] == 0:
            for key in ("accuracy", "accuracy_low", "accuracy_high", "roc_auc", "macro_f1", "cohen_kappa"):
                assert row[key] == registered[key], (row["transform"], key)
            assert row["accuracy_vs_registered"] == 0 and row["accuracy_vs_registered_p"] == 1.0
            setting = f"{row['transform']}:{row['degree']}"
            assert result["probabilities"][setting] == result["probabilities"]["registered"]
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
    paths = write_experiment(result, tmp_path / "out")
    with paths["csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert json.loads(paths["json"].read_text())["rows"] == rows
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")


def test_architectures_command(studies: Path, tmp_path: Path) -> None:
    """The CLI on the tiny CNN fine-tuned and as SVM features, under the same folds."""
    from typer.testing import CliRunner

    from worker.cli import app

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env |= {"TRIPHASE_DATA_DIR": str(tmp_path / "data"), "TRIPHASE_MODELS__DEVICE": "cpu"}
    result = CliRunner().invoke(app, ["experiment", "architectures", str(studies), "--out", str(tmp_path / "out"),
                                      "--archs", "tinycnn,tinycnn:svm", "--folds", "2", "--inner-folds", "2",
                                      "--epochs", "2", "--input-size", "32", "--random-init", "--resamples", "20",
                                      "--task", "mri-ehcc"], env=env)
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader((tmp_path / "out" / "table.csv").open()))
    assert [(r["architecture"], r["mode"]) for r in table] == [("tinycnn", "finetune"), ("tinycnn", "svm")]
    assert all(0 <= float(r["accuracy"]) <= 1 for r in table)
    bad = CliRunner().invoke(app, ["experiment", "architectures", str(studies), "--out", str(tmp_path / "x"),
                                   "--archs", "nonesuch"], env=env)
    assert bad.exit_code == 2
