"""Abstention ("indeterminate") chosen for a coverage and counted the same way everywhere.

The threshold on the calibrated top-class probability is chosen on out-of-fold probabilities for a
target coverage (selective classification, Geifman & El-Yaniv 2017), never on evaluation data.
Cross-validation reports coverage with *cross-fitted* thresholds (each fold answered with the
threshold chosen on the other folds), so the selective accuracy it quotes is not fitted on itself.

One definition, used by cross-validation and by ``evaluate`` alike:
- accuracy, recall, balanced accuracy and F1 are over all lesions, an abstention counting as wrong
  (``accuracy_abstain_as_wrong``); one-vs-rest specificity counts it as a true negative for the
  other classes, since it calls none of them;
- ``accuracy_answered`` (selective accuracy) and Cohen's kappa are over the answered lesions only,
  always reported beside the coverage (``answered`` / ``abstained``);
- the confusion matrix holds every lesion: rows the truth, columns the classes plus
  ``indeterminate``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from sklearn.metrics import confusion_matrix

INDETERMINATE = "indeterminate"


class Coverage(TypedDict):
    """How many lesions were answered, and accuracy both ways (NaN when nothing was answered)."""

    answered: int
    abstained: int
    accuracy_answered: float
    accuracy_abstain_as_wrong: float


def threshold_for_coverage(probabilities: np.ndarray, target: float) -> float:
    """The largest threshold on the top-class probability that still answers at least ``target``
    of these lesions (ties at the threshold are all answered)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target coverage must be in (0, 1], got {target}")
    confidence = np.sort(np.asarray(probabilities, dtype=np.float64).max(axis=1))[::-1]
    if confidence.size == 0:
        return 0.0
    return float(confidence[max(1, math.ceil(target * confidence.size)) - 1])


def apply_abstention(probabilities: np.ndarray, classes: Sequence[str], threshold: float) -> np.ndarray:
    """The top class of each row, or ``indeterminate`` where its probability is below ``threshold``."""
    probs = np.asarray(probabilities, dtype=np.float64)
    top = probs.argmax(axis=1)
    labels: np.ndarray = np.asarray(classes, dtype=object)[top]
    labels[probs[np.arange(top.size), top] < threshold] = INDETERMINATE
    return labels


def cross_fitted_labels(probabilities: np.ndarray, classes: Sequence[str], folds: Sequence[np.ndarray],
                        target: float) -> tuple[np.ndarray, list[float]]:
    """Labels where each fold's threshold is chosen on the other folds' probabilities, and those
    thresholds (``folds`` are the test rows of each fold)."""
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = np.empty(probs.shape[0], dtype=object)
    thresholds = []
    for test in folds:
        others = np.setdiff1d(np.arange(probs.shape[0]), test)
        threshold = threshold_for_coverage(probs[others], target)
        labels[test] = apply_abstention(probs[test], classes, threshold)
        thresholds.append(threshold)
    return labels, thresholds


def coverage(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray) -> Coverage:
    """Answered and abstained counts, selective accuracy and accuracy with abstentions as wrong."""
    true, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    answered = pred != INDETERMINATE
    hits = true == pred
    return {"answered": int(answered.sum()), "abstained": int((~answered).sum()),
            "accuracy_answered": float(hits[answered].mean()) if answered.any() else float("nan"),
            "accuracy_abstain_as_wrong": float(hits.mean()) if hits.size else float("nan")}


def confusion_with_abstention(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray,
                              labels: Sequence[str]) -> np.ndarray:
    """(K, K+1) counts: rows the truth in ``labels`` order, columns ``labels`` then indeterminate
    (any prediction outside ``labels``), so the matrix sums to the number of lesions."""
    true, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    answered = np.isin(pred, np.asarray(labels, dtype=object))
    columns = [*labels, INDETERMINATE]
    matrix: np.ndarray = confusion_matrix(true, np.where(answered, pred, INDETERMINATE), labels=columns)[:-1]
    return matrix
