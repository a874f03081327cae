"""What training records for honest numbers: its own calibration map, nested out-of-fold
reliability, the abstention threshold for a coverage, and salted hashes of its patients."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.abstention import INDETERMINATE
from models.architectures import default_registry
from models.artifact import Artifact, TrainingMembership, open_artifact, save_trained, subject_hash, training_subjects
from models.calibration import CalibrationMap, softmax
from models.inference import Classifier
from models.training import TrainingConfig, TrainingIds, train_model
from models.transforms import to_input_tensor
from tests.models.conftest import CLASSES


def test_the_manifest_records_the_calibration_and_nested_reliability(tiny_artifact, trained_tiny) -> None:
    calibration = tiny_artifact.manifest["calibration"]
    assert set(calibration["bias"]) == set(calibration["prior_correction"]) == set(CLASSES)
    assert "held-out" in calibration["fitted_on"] and trained_tiny.final_fit["calibration_lesions"] > 0
    per_class = calibration["per_class"]
    assert [row["class"] for row in per_class] == CLASSES
    assert sum(row["n"] for row in per_class) == 48
    assert all(0.0 <= row["ece"] <= 1.0 for row in per_class)
    assert sum(row["observed_rate"] for row in per_class) == pytest.approx(1.0)
    assert sum(row["mean_predicted"] for row in per_class) == pytest.approx(1.0)
    cv = tiny_artifact.manifest["cv"]
    assert cv["coverage"]["answered"] + cv["coverage"]["abstained"] == 48


def test_the_classifier_applies_the_deployed_networks_own_map(tiny_artifact, held_out_set) -> None:
    classifier = Classifier(tiny_artifact, registry=default_registry())
    inputs = to_input_tensor(held_out_set.images[:5], classifier.preprocessing)
    with torch.inference_mode():
        logits = classifier.model(inputs).numpy().astype(np.float64)
    expected = CalibrationMap.from_manifest(tiny_artifact.manifest["calibration"], CLASSES).apply(logits)
    np.testing.assert_allclose(classifier.probabilities_of(inputs), expected, rtol=1e-5, atol=1e-6)
    # An older manifest with only a temperature still loads, as plain temperature scaling.
    old = json.loads(json.dumps(tiny_artifact.manifest))
    old["calibration"] = {"method": "temperature scaling", "temperature": 2.0, "out_of_fold_log_loss": 0.5}
    plain = Classifier(Artifact(tiny_artifact.path, old), registry=default_registry())
    np.testing.assert_allclose(plain.probabilities_of(inputs), softmax(logits, 2.0), rtol=1e-5, atol=1e-6)


def test_training_patients_are_stored_as_salted_hashes(tiny_artifact, train_set) -> None:
    subjects = tiny_artifact.manifest["training"]["subjects"]
    salt = subjects["salt"]
    assert len(salt) == 32 and subjects["hash"] == "sha256(salt + id), hex"
    expected = sorted({hashlib.sha256((salt + p).encode()).hexdigest() for p in train_set.patient_ids})
    assert subjects["patients"] == expected
    text = (tiny_artifact.path / "manifest.json").read_text()
    assert not any(p in text for p in set(train_set.patient_ids))
    membership = TrainingMembership.of(tiny_artifact.manifest)
    assert membership is not None
    assert membership.contains(patient_id=train_set.patient_ids[0], study_uid=None)
    assert not membership.contains(patient_id="H0-0", study_uid="1.2.3")


def test_salts_differ_between_models_and_ids_hash_with_them() -> None:
    first, second = TrainingIds(["P1"], ["1.2.3"]), TrainingIds(["P1"], ["1.2.3"])
    assert first.salt != second.salt
    assert training_subjects(first)["studies"] == [subject_hash(first.salt, "1.2.3")]
    assert training_subjects(first)["patients"] != training_subjects(second)["patients"]
    assert TrainingMembership.of({"training": {}}) is None  # an older manifest: unknown, not "none"


def test_target_coverage_chooses_the_threshold_on_out_of_fold_probabilities(train_set, tmp_path: Path) -> None:
    config = TrainingConfig(architecture="tinycnn", folds=2, epochs=2, batch_size=16, input_size=24,
                            random_init=True, seed=3, target_coverage=0.75)
    studies = [f"1.2.826.0.1.{k // 2}" for k in range(len(train_set.labels))]
    trained = train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=CLASSES, config=config,
                          registry=default_registry(), weights_dir=Path("/nonexistent"), study_uids=studies)
    abstention = trained.abstention
    assert abstention["target_coverage"] == 0.75 and abstention["out_of_fold_coverage"] >= 0.75
    assert 0.0 < abstention["threshold"] < 1.0
    cv = trained.cv
    n = len(train_set.labels)
    assert cv["coverage"]["answered"] + cv["coverage"]["abstained"] == n
    assert cv["out_of_fold"]["accuracy"] == pytest.approx(cv["coverage"]["accuracy_abstain_as_wrong"])
    artifact = open_artifact(save_trained(trained, tmp_path, task="t", channel_recipe=["a", "b", "c"]).path)
    assert artifact.manifest["abstention_threshold"] == abstention["threshold"]
    assert len(artifact.manifest["training"]["subjects"]["studies"]) == len(set(studies))
    classifier = Classifier(artifact, registry=default_registry())
    predictions = classifier.predict(train_set.images[:12])
    for p in predictions:
        assert (p.label == INDETERMINATE) == (max(p.probabilities.values()) < abstention["threshold"])
    with pytest.raises(ValueError, match="not both"):
        TrainingConfig(architecture="tinycnn", target_coverage=0.9, abstention_threshold=0.5)
