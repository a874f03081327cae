"""``evaluate`` leaves out the model's own training patients, counts abstentions one way, and
reports class-wise calibration: end to end on the evaluation fixtures."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as sk
from typer.testing import CliRunner

from db.engine import Database
from db.repository import Repository
from models.artifact import FORMAT, MANIFEST, content_hash, training_subjects
from models.evaluation.summary import BootstrapSettings
from models.training import TrainingIds
from tests.evaluation.conftest import CLASSES, study_uid
from worker.evaluation.cases import load_cases
from worker.evaluation.imports import import_file
from worker.evaluation.render import write_report
from worker.evaluation.report import evaluate

SETTINGS = BootstrapSettings(n_resamples=100, seed=1)
TRAINING_PATIENTS = [f"P{k:03d}" for k in range(6)]


def fake_artifact(models_dir: Path, *, patients: list[str], studies: list[str]) -> str:
    """An artifact folder whose manifest records these training patients and studies (hashed)."""
    manifest = {"format": FORMAT, "task": "mri-ehcc", "classes": CLASSES, "files": {},
                "training": {"subjects": training_subjects(TrainingIds(patients, studies))}}
    digest = content_hash(manifest)
    (models_dir / digest).mkdir(parents=True)
    (models_dir / digest / MANIFEST).write_text(json.dumps(manifest))
    return digest


@pytest.fixture
def leaky(repository: Repository, populated: Callable[..., dict], tmp_path: Path) -> dict:
    """Predictions of a model trained on P000-P005 (by patient) and on study 7 (by study)."""
    models_dir = tmp_path / "models"
    model = fake_artifact(models_dir, patients=TRAINING_PATIENTS, studies=[study_uid(7)])
    files = populated(model=model)
    import_file("truth", files["labels"], repository)
    return files | {"models_dir": models_dir, "model": model}


def _expected_training_lesions(database: Database) -> int:
    [cases] = load_cases(database)
    return int(sum(p in TRAINING_PATIENTS or s == study_uid(7)
                   for p, s in zip(cases.patient_ids, cases.study_uids, strict=True)))


def test_training_lesions_are_left_out_and_counted(database: Database, leaky: dict) -> None:
    expected = _expected_training_lesions(database)
    assert expected > 0
    document = evaluate(database, settings=SETTINGS, readers=False, models_dir=leaky["models_dir"])
    [section] = document["models"]
    assert section["excluded_training_lesions"] == document["excluded_training_lesions"] == expected
    assert section["summary"]["lesions"] == leaky["lesions"] - expected
    assert section["summary"]["patients"] == leaky["patients"] - len(TRAINING_PATIENTS) - 1
    assert document["resubstitution"] is False and section["resubstitution"] is False
    assert "salted hashes" in section["training_check"]
    unchecked = evaluate(database, settings=SETTINGS, readers=False)
    assert unchecked["models"][0]["training_check"].startswith("not checked")
    assert unchecked["models"][0]["summary"]["lesions"] == leaky["lesions"]


def test_include_training_marks_resubstitution_everywhere(database: Database, leaky: dict, tmp_path: Path) -> None:
    document = evaluate(database, settings=SETTINGS, readers=False, models_dir=leaky["models_dir"],
                        include_training=True)
    [section] = document["models"]
    assert document["resubstitution"] is True and section["resubstitution"] is True
    assert section["excluded_training_lesions"] == 0 and document["filters"]["include_training"] is True
    assert section["training_lesions_included"] == _expected_training_lesions(database)
    assert section["summary"]["lesions"] == leaky["lesions"]
    page = write_report(document, tmp_path / "out")["html"].read_text()
    assert page.count("RESUBSTITUTION") == 2  # the page's top and the model's section
    clean = write_report(evaluate(database, settings=SETTINGS, readers=False, models_dir=leaky["models_dir"]),
                         tmp_path / "clean")["html"].read_text()
    assert "RESUBSTITUTION" not in clean


def test_coverage_kappa_and_confusion_use_one_definition(database: Database, leaky: dict) -> None:
    document = evaluate(database, settings=SETTINGS, readers=False, models_dir=leaky["models_dir"],
                        include_training=True)
    [section] = document["models"]
    [cases] = load_cases(database)
    answered = cases.y_pred != "indeterminate"
    assert 0 < (~answered).sum() < answered.sum()  # the fixture abstains on some lesions
    coverage = section["coverage"]
    assert coverage["answered"] == answered.sum() and coverage["abstained"] == (~answered).sum()
    assert coverage["accuracy_answered"] == pytest.approx(sk.accuracy_score(cases.y_true[answered],
                                                                            cases.y_pred[answered]))
    metrics = section["summary"]["metrics"]
    assert coverage["accuracy_abstain_as_wrong"] == pytest.approx(sk.accuracy_score(cases.y_true, cases.y_pred))
    assert metrics["accuracy"]["estimate"] == pytest.approx(coverage["accuracy_abstain_as_wrong"])
    assert metrics["cohen_kappa"]["estimate"] == pytest.approx(
        sk.cohen_kappa_score(cases.y_true[answered], cases.y_pred[answered]))
    cm = section["summary"]["confusion_matrix"]
    assert cm["columns"] == [*CLASSES, "indeterminate"]
    matrix = np.array(cm["matrix"])
    assert matrix.sum() == len(cases) and matrix[:, -1].sum() == section["indeterminate"]
    np.testing.assert_array_equal(matrix[:, :-1], sk.confusion_matrix(
        cases.y_true[answered], cases.y_pred[answered], labels=CLASSES))


def test_class_wise_calibration_of_the_stored_probabilities(database: Database, leaky: dict) -> None:
    document = evaluate(database, settings=SETTINGS, readers=False, models_dir=leaky["models_dir"])
    [section] = document["models"]
    [cases] = load_cases(database)
    training = np.array([p in TRAINING_PATIENTS or s == study_uid(7)
                         for p, s in zip(cases.patient_ids, cases.study_uids, strict=True)])
    truth, scores = cases.y_true[~training], cases.scores[~training]
    per_class = section["calibration"]["per_class"]
    assert section["calibration"]["lesions"] == truth.size
    for k, row in enumerate(per_class):
        positive, p = truth == CLASSES[k], scores[:, k]
        assert row["class"] == CLASSES[k] and row["n"] == positive.sum()
        assert row["mean_predicted"] == pytest.approx(p.mean())
        assert row["observed_rate"] == pytest.approx(positive.mean())
        bins = np.minimum((np.ceil(p * 10) - 1).clip(0), 9).astype(int)  # (b/10, (b+1)/10], 0 in the first
        ece = sum((bins == b).mean() * abs(positive[bins == b].mean() - p[bins == b].mean())
                  for b in range(10) if (bins == b).any())
        assert row["ece"] == pytest.approx(ece)


def test_cli_leaves_training_lesions_out_unless_asked(tmp_path: Path, populated: Callable[..., dict],
                                                     repository: Repository, database: Database) -> None:
    from worker.cli import app

    if not str(database.url).startswith("sqlite"):
        pytest.skip("the CLI test runs on its own SQLite file")
    data_dir = tmp_path / "data"
    model = fake_artifact(data_dir / "models", patients=TRAINING_PATIENTS, studies=[])
    files = populated(model=model)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env |= {"TRIPHASE_DB__URL": str(database.url), "TRIPHASE_DATA_DIR": str(data_dir)}
    runner = CliRunner()
    assert runner.invoke(app, ["truth", "import", str(files["labels"])], env=env).exit_code == 0
    done = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "a"), "--resamples", "20", "--no-readers",
                               "--json"], env=env)
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["excluded_training_lesions"] > 0 and document["resubstitution"] is False
    included = runner.invoke(app, ["evaluate", "--out", str(tmp_path / "b"), "--resamples", "20", "--no-readers",
                                   "--include-training", "--json"], env=env)
    assert included.exit_code == 0, included.output
    assert json.loads(included.stdout)["resubstitution"] is True
    assert "RESUBSTITUTION" in (tmp_path / "b" / "report.html").read_text()
