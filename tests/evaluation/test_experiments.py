"""Both experiments end to end on a tiny synthetic configuration (random-init tiny CNN + SVM)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from models.evaluation.summary import BootstrapSettings
from models.training import TrainingConfig
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


def test_displacement_is_in_millimetres_of_the_patient_grid() -> None:
    from worker.alignment import displaced

    volume = np.zeros((2, 8, 40), dtype=np.float32)
    volume[:, :, 20:] = 1.0  # an edge at column 20
    moved = displaced(volume, (3.0, 0.7, 2.0), (0.0, 0.0, 6.0))  # 6 mm at 2 mm per column: 3 columns
    assert np.array_equal(moved[0, 0, 22:24], [0.0, 1.0]) and moved[0, 0, 0] == 0.0 and moved[0, 0, -1] == 1.0
    assert np.array_equal(displaced(volume, (3.0, 0.7, 1.0), (0.0, 0.0, 6.0))[0, 0, 25:27], [0.0, 1.0])


def test_rebuilt_composites_move_only_the_chosen_phase(studies: Path) -> None:
    from worker.evaluation.experiments import load_data

    data = load_data(studies, size=32, task="mri-ehcc")
    assert len(data.images) == 16 and data.rebuild is not None
    shifted = data.rebuild(True, {data.channel_recipe[0]: (0.0, 0.0, 6.0)})
    red = np.asarray([i[:, :, 0] for i in shifted], dtype=float) - np.asarray([i[:, :, 0] for i in data.images])
    others = np.asarray([i[:, :, 1:] for i in shifted], dtype=float) - np.asarray([i[:, :, 1:] for i in data.images])
    assert np.abs(red).max() > 0 and np.abs(others).max() == 0


def _fake_training(data: object, images: list[np.ndarray], *, config: TrainingConfig, folds: int,
                   weights_dir: Path) -> np.ndarray:
    """Stands in for cross-validated training: probabilities from the red channel and the seed."""
    rng = np.random.default_rng(config.seed)
    red = np.array([float(np.mean(np.asarray(i, dtype=float)[:, :, 0])) for i in images])
    logit = (red - red.mean()) * 20 + rng.normal(0, 0.5, red.size)
    p = 1 / (1 + np.exp(-logit))
    return np.column_stack([1 - p, p])


def test_misregistration_arms_seeds_and_paired_tests(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from models.evaluation.bootstrap import paired_difference
    from models.evaluation.metrics import encode
    from worker.evaluation import experiments
    from worker.evaluation.experiments import Design, ExperimentData, misregistration_experiment, write_experiment

    monkeypatch.setattr(experiments, "out_of_fold_probabilities", _fake_training)
    rng = np.random.default_rng(0)
    images = [rng.uniform(size=(8, 8, 3)) for _ in range(40)]
    labels = np.array(["early_hcc" if np.mean(i[:, :, 0]) < 0.5 else "progressed_hcc" for i in images], dtype=object)
    labels[:6] = labels[:6][::-1]
    calls: list[tuple[bool, object]] = []

    def rebuild(register: bool, displace: object) -> list[np.ndarray]:
        calls.append((register, displace))
        return [np.clip(i + rng.normal(0, 0.1, i.shape), 0, 1) for i in images]

    data = ExperimentData(images, labels, np.array([f"P{k // 2}" for k in range(40)], dtype=object),
                          ["early_hcc", "progressed_hcc"], ["arterial", "t2_haste", "t1_in"], rebuild)
    design = Design(_config(), folds=2, seeds=(0, 1, 2), weights_dir=tmp_path, settings=SETTINGS)
    result = misregistration_experiment(data, degrees={"shift": [0.0, 4.0], "rotate": [10.0]}, channel=0,
                                        design=design)
    assert calls == [(False, None), (True, {"arterial": (0.0, 0.0, 4.0)})]  # unregistered; 4 mm of arterial
    rows = result["rows"]
    assert [r["arm"] for r in rows] == ["registered", "unregistered", "shift:0", "shift:4", "rotate:10"]
    assert result["reference"] == "registered" and result["seeds"] == [0, 1, 2]
    assert result["units"]["shift"] == "mm on the patient grid" and result["moved_role"] == "arterial"
    probabilities = result["probabilities"]
    assert probabilities["shift:0"] == probabilities["registered"] and len(probabilities["registered"]) == 3
    assert rows[2]["accuracy_difference"] == 0 and rows[2]["accuracy_p"] == 1.0
    truth = encode(data.labels, data.classes)
    hits = {arm: np.mean([np.argmax(p, axis=1) == truth for p in np.asarray(probabilities[arm])], axis=0)
            for arm in ("registered", "rotate:10")}
    assert rows[0]["accuracy"] == pytest.approx(hits["registered"].mean())  # the mean over seeds
    expected = paired_difference(lambda r: float(hits["rotate:10"][r].mean()),
                                 lambda r: float(hits["registered"][r].mean()), data.patient_ids,
                                 n_resamples=SETTINGS.n_resamples, seed=SETTINGS.seed)
    assert rows[4]["accuracy_difference"] == pytest.approx(expected.difference.estimate)
    assert rows[4]["accuracy_difference_low"] == pytest.approx(expected.difference.low)
    assert rows[4]["accuracy_p"] == pytest.approx(expected.p_value)
    assert rows[4]["accuracy_difference_ci_method"] == expected.difference.method == "bca"
    assert {r["accuracy_ci_method"] for r in rows} <= {"bca", "percentile"} and rows[2]["accuracy_p"] == 1.0
    tested = [r["accuracy_p"] for r in rows[1:]]
    assert [r["accuracy_p_holm"] for r in rows[1:]] == pytest.approx(multipletests(tested, method="holm")[1])
    for row in rows:
        assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"] and row["accuracy_seed_sd"] >= 0
    paths = write_experiment(result, tmp_path / "out")
    with paths["csv"].open() as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert json.loads(paths["json"].read_text())["rows"] == rows
    assert paths["plot"].read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text()
    assert "not for diagnostic use" in page and 'data-key="rows/4/accuracy_difference"' in page


def test_architectures_command(studies: Path, tmp_path: Path) -> None:
    """The CLI on the tiny CNN fine-tuned and as SVM features, under the same folds."""
    from typer.testing import CliRunner

    from worker.cli import app

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env |= {"TRIPHASE_DATA_DIR": str(tmp_path / "data"), "TRIPHASE_MODELS__DEVICE": "cpu"}
    result = CliRunner().invoke(app, ["experiment", "architectures", str(studies), "--out", str(tmp_path / "out"),
                                      "--archs", "tinycnn,tinycnn:svm", "--folds", "2", "--inner-folds", "2",
                                      "--epochs", "2", "--input-size", "32", "--random-init", "--resamples", "20",
                                      "--task", "mri-ehcc", "--seeds", "0", "--no-augment", "--reference",
                                      "tinycnn:svm"], env=env)
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader((tmp_path / "out" / "table.csv").open()))
    assert [(r["architecture"], r["mode"]) for r in table] == [("tinycnn", "finetune"), ("tinycnn", "svm")]
    assert all(0 <= float(r["accuracy"]) <= 1 for r in table)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["reference"] == "tinycnn:svm" and results["config"]["batch_size"] == 32  # train's recipe
    assert table[1]["accuracy_difference"] == "" and table[0]["accuracy_difference"] != ""
    assert (tmp_path / "out" / "report.html").is_file()
    bad = CliRunner().invoke(app, ["experiment", "architectures", str(studies), "--out", str(tmp_path / "x"),
                                   "--archs", "nonesuch"], env=env)
    assert bad.exit_code == 2
