"""The few classification metrics cross-validation reports, in scikit-learn's calling style.

Accuracy alone misleads on these cohorts (one class is half of the Yamada cohort), so every report
carries balanced accuracy, macro-F1 and the majority-class baseline beside it. Full evaluation
(bootstrap intervals, DeLong, readers) belongs to the evaluation package, not here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def _check(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {true.shape} and {pred.shape}")
    if true.size == 0:
        raise ValueError("no samples")
    return true, pred


def majority_class(y_reference: Sequence[str] | np.ndarray) -> str:
    """The most frequent label (ties broken by sorted label, so the choice is reproducible)."""
    counts = Counter(np.asarray(y_reference).tolist())
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]


def classification_summary(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray, *,
                           labels: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro-F1 over ``labels`` (default: those present)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score  # noqa: PLC0415

    true, pred = _check(y_true, y_pred)
    present = [label for label in (labels or sorted(set(true.tolist()))) if label in set(true.tolist())]
    return {
        "accuracy": float(accuracy_score(true, pred)),
        # sklearn's balanced accuracy averages recall over classes present in y_true.
        "balanced_accuracy": float(balanced_accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
    }


def majority_baseline(y_true: Sequence[str] | np.ndarray, *, y_reference: Sequence[str] | np.ndarray | None = None,
                      labels: Sequence[str] | None = None) -> dict[str, float]:
    """The summary of always predicting the majority class of ``y_reference`` (default ``y_true``)."""
    true = np.asarray(y_true)
    majority = majority_class(true if y_reference is None else y_reference)
    return classification_summary(true, np.full(true.shape, majority, dtype=object).astype(true.dtype),
                                  labels=labels)


def log_loss(y_true_index: np.ndarray, probabilities: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (lower is better)."""
    index = np.asarray(y_true_index, dtype=int)
    probs = np.clip(np.asarray(probabilities, dtype=np.float64)[np.arange(index.size), index], eps, 1.0)
    return float(-np.log(probs).mean())


def mean_of(folds: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = folds[0].keys() if folds else []
    return {key: float(np.mean([fold[key] for fold in folds])) for key in keys}
