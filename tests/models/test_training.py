"""Training learns, is reproducible, keeps patients apart; SVM mode works; calibration helps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.architectures import default_registry
from models.calibration import fit_temperature, log_loss, softmax
from models.evaluation.baseline import majority_baseline
from models.evaluation.metrics import classification_summary
from models.inference import Classifier
from models.splits import patient_folds
from models.training import TrainingConfig, train_model
from tests.models.conftest import CLASSES
from tests.models.synthetic import make_composites


def test_folds_never_share_a_patient() -> None:
    data = make_composites(classes=CLASSES, patients_per_class=6, lesions_per_patient=3, size=16)
    groups = np.asarray(data.patient_ids)
    folds = patient_folds(data.labels, groups, folds=3, seed=0)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(groups)))
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert set(np.asarray(data.labels)[test]) == set(CLASSES)  # stratified


def test_fine_tuning_learns_well_above_the_majority_baseline(trained_tiny, tiny_artifact, held_out_set) -> None:
    cv = trained_tiny.cv
    assert cv["mean"]["macro_f1"] > cv["majority_baseline_mean"]["macro_f1"] + 0.4
    assert len(cv["per_fold"]) == 3 and all("majority_baseline" in f for f in cv["per_fold"])
    predictions = Classifier(tiny_artifact, registry=default_registry()).predict(held_out_set.images)
    labels = [p.label for p in predictions]
    held_out = classification_summary(held_out_set.labels, labels, labels=CLASSES)
    baseline = majority_baseline(held_out_set.labels, y_reference=["early_hcc"] * 3 + ["non_hcc_cc"],
                                 labels=CLASSES)
    assert held_out["macro_f1"] >= 0.8 > baseline["macro_f1"] + 0.4


def test_calibration_lowers_log_loss_on_held_out_data(train_set, held_out_set) -> None:
    """A temperature fitted on validation patients lowers the log-loss on other, unseen patients."""
    import torch

    from models.architectures import build_model, head_module
    from models.network_training import FitSettings, fit_network, predict_logits
    from models.transforms import NO_AUGMENTATION, Preprocessing, to_input_tensor

    spec = default_registry().get("tinycnn")
    prep = Preprocessing(input_size=32)
    validation = make_composites(classes=CLASSES, patients_per_class=6, size=32, seed=5, noise=0.25,
                                 patient_prefix="V")
    test = make_composites(classes=CLASSES, patients_per_class=6, size=32, seed=6, noise=0.25, patient_prefix="T")
    torch.manual_seed(0)
    model = build_model(spec, len(CLASSES))
    y_train = np.array([CLASSES.index(c) for c in train_set.labels])
    settings = FitSettings(6, 16, 3e-3, 0.0, 3, NO_AUGMENTATION, False, False)
    result = fit_network(model, head_module(model, spec), x_fit=to_input_tensor(train_set.images, prep),
                         y_fit=y_train, x_val=None, y_val=None, num_classes=3, linear_probe=False,
                         class_weighting=True, settings=settings, device=torch.device("cpu"), seed=0)
    model.load_state_dict(result.state)

    def logits_and_y(data):
        logits = predict_logits(model, to_input_tensor(data.images, prep), torch.device("cpu"))
        return logits, np.array([CLASSES.index(c) for c in data.labels])

    temperature = fit_temperature(*logits_and_y(validation))
    logits, y = logits_and_y(test)
    assert temperature != pytest.approx(1.0, abs=0.05)
    assert log_loss(y, softmax(logits, temperature)) < log_loss(y, softmax(logits))


def test_the_pipeline_records_its_out_of_fold_calibration(trained_tiny, tiny_artifact) -> None:
    calibration = trained_tiny.calibration
    assert calibration["out_of_fold_log_loss"] <= calibration["out_of_fold_log_loss_uncalibrated"]
    classifier = Classifier(tiny_artifact, registry=default_registry())
    assert classifier.temperature == pytest.approx(trained_tiny.temperature)


def test_temperature_fit_recovers_an_overconfident_scale() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(2000, 3)) * 2.0
    y = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    assert fit_temperature(true_logits * 4.0, y) == pytest.approx(4.0, rel=0.15)


def _small_run(mode: str, seed: int, train_set, **overrides) -> dict:
    config = TrainingConfig(architecture="tinycnn", mode=mode, folds=2, epochs=3, batch_size=16, input_size=24,
                            random_init=True, seed=seed, **overrides)  # type: ignore[arg-type]
    trained = train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=CLASSES, config=config,
                          registry=default_registry(), weights_dir=Path("/nonexistent"))
    return trained.cv


def test_same_seed_gives_the_same_metrics(train_set) -> None:
    first, second = _small_run("finetune", 11, train_set), _small_run("finetune", 11, train_set)
    assert first == second


def test_linear_probe_trains_only_the_head(train_set) -> None:
    cv = _small_run("linear", 0, train_set)
    assert 0.0 <= cv["mean"]["accuracy"] <= 1.0


def test_svm_mode_learns_with_inner_cv_and_calibrated_probabilities(train_set, held_out_set, tmp_path) -> None:
    from models.artifact import save_trained

    config = TrainingConfig(architecture="tinycnn", mode="svm", folds=3, input_size=32, random_init=True, seed=0)
    trained = train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=CLASSES, config=config,
                          registry=default_registry(), weights_dir=Path("/nonexistent"))
    assert trained.cv["mean"]["macro_f1"] > trained.cv["majority_baseline_mean"]["macro_f1"] + 0.3
    assert {"C", "kernel"} <= set(trained.final_fit["svm"]["params"])
    artifact = save_trained(trained, tmp_path, task="t", channel_recipe=["arterial", "t2_haste", "t1_in"])
    predictions = Classifier(artifact, registry=default_registry()).predict(held_out_set.images[:6], explain=True)
    for p in predictions:
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert p.heatmap is not None and p.heatmap.shape == (32, 32)


def test_missing_weights_stop_training_before_any_work(train_set, tmp_path) -> None:
    from models.weights import WeightsNotFoundError

    config = TrainingConfig(architecture="vgg16", mode="svm", folds=2)
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
        train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=CLASSES, config=config,
                    registry=default_registry(), weights_dir=tmp_path)


def test_labels_outside_the_task_are_refused(train_set) -> None:
    config = TrainingConfig(architecture="tinycnn", random_init=True)
    with pytest.raises(ValueError, match="not in the task"):
        train_model(train_set.images, train_set.labels, train_set.patient_ids, classes=["early_hcc", "x"],
                    config=config, registry=default_registry(), weights_dir=Path("/nonexistent"))
