"""Prior-corrected calibration and abstention, against scikit-learn and direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics as sk
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

from models.abstention import (
    INDETERMINATE,
    apply_abstention,
    confusion_with_abstention,
    coverage,
    cross_fitted_labels,
    threshold_for_coverage,
)
from models.calibration import (
    CalibrationMap,
    fit_calibration,
    fit_temperature,
    log_loss,
    per_class_reliability,
    softmax,
)
from models.network_training import class_weights

#: Yamada-like prevalences: early HCC rare (about 3%) among five classes.
PREVALENCE = np.array([0.028, 0.25, 0.35, 0.22, 0.152])
CLASSES = ["early_hcc", "progressed_hcc", "non_hcc_a", "non_hcc_b", "non_hcc_c"]


def _population(seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, size=(len(PREVALENCE), 4))

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.choice(len(PREVALENCE), size=n, p=PREVALENCE / PREVALENCE.sum())
        return means[y] + rng.normal(size=(n, 4)), y
    return sample


@pytest.fixture(scope="module")
def weighted_logits():
    """Class-weighted training (scikit-learn's 'balanced' = our inverse-frequency weights), then the
    logits of a held-out calibration split and of a large test population."""
    sample = _population()
    (x, y), (x_cal, y_cal), (x_test, y_test) = sample(3000), sample(1500), sample(20000)
    model = LogisticRegression(class_weight="balanced", C=10.0, max_iter=2000).fit(x, y)
    return (class_weights(y, len(CLASSES)), model.decision_function(x_cal), y_cal, model.decision_function(x_test),
            y_test)


def test_prior_correction_restores_the_rare_class_prevalence(weighted_logits) -> None:
    weights, z_cal, y_cal, z_test, y_test = weighted_logits
    observed = np.bincount(y_test, minlength=len(CLASSES)) / y_test.size
    temperature_only = softmax(z_test, fit_temperature(z_cal, y_cal)).mean(axis=0)
    assert temperature_only[0] > 3 * observed[0]  # the defect: a single T cannot undo the weights
    calibrated = fit_calibration(z_cal, y_cal, class_weights=weights).apply(z_test)
    np.testing.assert_allclose(calibrated.mean(axis=0), observed, atol=0.01)
    assert abs(calibrated.mean(axis=0)[0] - observed[0]) < 0.1 * observed[0] + 0.003
    # When the rare class is predicted, its confidence is no longer far above how often it is right.
    predicted = calibrated.argmax(axis=1) == 0
    assert abs(calibrated[predicted, 0].mean() - (y_test[predicted] == 0).mean()) < 0.1
    assert log_loss(y_test, calibrated) < log_loss(y_test, softmax(z_test, fit_temperature(z_cal, y_cal)))


def test_log_loss_matches_scikit_learn(weighted_logits) -> None:
    weights, z_cal, y_cal, _, _ = weighted_logits
    probabilities = fit_calibration(z_cal, y_cal, class_weights=weights).apply(z_cal)
    assert log_loss(y_cal, probabilities) == pytest.approx(
        sk.log_loss(y_cal, probabilities, labels=list(range(len(CLASSES)))), rel=1e-9)


def test_calibration_recovers_a_known_temperature_and_bias() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(20000, 3)) * 2.0
    true_bias = np.array([0.8, -0.3, -0.5])
    y = np.array([rng.choice(3, p=p) for p in softmax(logits + true_bias)])
    fitted = fit_calibration(logits * 2.5, y)
    assert fitted.temperature == pytest.approx(2.5, rel=0.05)
    np.testing.assert_allclose(fitted.bias, true_bias - true_bias.mean(), atol=0.06)


def test_per_class_reliability_equals_a_direct_computation(weighted_logits) -> None:
    weights, z_cal, y_cal, z_test, y_test = weighted_logits
    probabilities = softmax(z_test)  # uncalibrated, so the gaps are large
    table = per_class_reliability(y_test, probabilities, CLASSES)
    edges = np.linspace(0, 1, 11)
    for k, row in enumerate(table):
        p, positive = probabilities[:, k], y_test == k
        ece = 0.0
        for b in range(10):
            inside = (p > edges[b]) & (p <= edges[b + 1]) if b else (p <= edges[1])
            if inside.any():
                ece += inside.mean() * abs(positive[inside].mean() - p[inside].mean())
        assert row["class"] == CLASSES[k] and row["n"] == int(positive.sum())
        assert row["mean_predicted"] == pytest.approx(p.mean()) and row["observed_rate"] == pytest.approx(
            positive.mean())
        assert row["ece"] == pytest.approx(ece, abs=1e-12)
        observed, predicted = calibration_curve(positive, p, n_bins=10)
        assert row["ece"] <= np.abs(observed - predicted).max() + 1e-12
    assert table[0]["mean_predicted"] > 2 * table[0]["observed_rate"]


def test_a_manifest_with_only_a_temperature_still_loads() -> None:
    logits = np.random.default_rng(0).normal(size=(50, 3))
    old = CalibrationMap.from_manifest({"method": "temperature scaling", "temperature": 1.7}, ["a", "b", "c"])
    np.testing.assert_allclose(old.apply(logits), softmax(logits, 1.7))
    np.testing.assert_allclose(CalibrationMap.from_manifest({}, ["a", "b", "c"]).apply(logits), softmax(logits))
    fitted = CalibrationMap(1.3, np.array([0.2, -0.1, -0.1]), np.log(np.array([2.0, 0.5, 1.0])))
    again = CalibrationMap.from_manifest(dict(fitted.to_json(["a", "b", "c"])), ["a", "b", "c"])
    np.testing.assert_allclose(again.apply(logits), fitted.apply(logits))


def test_threshold_answers_the_target_coverage() -> None:
    probabilities = softmax(np.random.default_rng(1).normal(size=(203, 4)) * 2)
    for target in (0.5, 0.9, 1.0):
        threshold = threshold_for_coverage(probabilities, target)
        answered = probabilities.max(axis=1) >= threshold
        assert answered.mean() >= target
        assert (probabilities.max(axis=1) > threshold).mean() < target  # the largest such threshold


def test_cross_fitted_thresholds_come_from_the_other_folds() -> None:
    probabilities = softmax(np.random.default_rng(2).normal(size=(90, 3)) * 2)
    folds = [np.arange(0, 30), np.arange(30, 60), np.arange(60, 90)]
    labels, thresholds = cross_fitted_labels(probabilities, ["a", "b", "c"], folds, 0.8)
    for test, threshold in zip(folds, thresholds, strict=True):
        others = np.setdiff1d(np.arange(90), test)
        assert threshold == threshold_for_coverage(probabilities[others], 0.8)
        np.testing.assert_array_equal(labels[test], apply_abstention(probabilities[test], ["a", "b", "c"], threshold))


def test_coverage_and_confusion_count_abstentions_one_way() -> None:
    truth = np.array(["a", "a", "b", "b", "c", "c", "a"], dtype=object)
    pred = np.array(["a", INDETERMINATE, "b", "a", INDETERMINATE, "c", "a"], dtype=object)
    result = coverage(truth, pred)
    answered = pred != INDETERMINATE
    assert result == {"answered": 5, "abstained": 2,
                      "accuracy_answered": pytest.approx(sk.accuracy_score(truth[answered], pred[answered])),
                      "accuracy_abstain_as_wrong": pytest.approx(sk.accuracy_score(truth, pred))}
    matrix = confusion_with_abstention(truth, pred, ["a", "b", "c"])
    assert matrix.shape == (3, 4) and matrix.sum() == truth.size
    np.testing.assert_array_equal(matrix[:, 3], [1, 0, 1])
    np.testing.assert_array_equal(matrix[:, :3], sk.confusion_matrix(truth[answered], pred[answered],
                                                                      labels=["a", "b", "c"]))
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["accuracy_abstain_as_wrong"])
