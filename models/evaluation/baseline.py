"""The majority-class baseline: what "always say the largest class" scores.

In the Yamada cohort the largest class is half of the patients, so a plain accuracy is only
meaningful next to this number. The class is chosen on a reference set (default: the evaluated
truth itself, which is how papers state it); ties go to the first label in sorted order, so the
choice is reproducible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from models.evaluation.metrics import LabelSummary, classification_summary


def majority_class(y_reference: Sequence[str] | np.ndarray) -> str:
    """The most frequent label (ties broken by sorted label, so the choice is reproducible)."""
    counts = Counter(np.asarray(y_reference, dtype=object).tolist())
    if not counts:
        raise ValueError("no samples")
    label: str = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return label


def majority_predictions(y_true: Sequence[str] | np.ndarray, *,
                         y_reference: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """The baseline's labels: the reference's majority class for every case."""
    true = np.asarray(y_true, dtype=object)
    if true.size == 0:
        raise ValueError("no samples")
    majority = majority_class(true if y_reference is None else y_reference)
    return np.full(true.shape, majority, dtype=object)


def majority_baseline(y_true: Sequence[str] | np.ndarray, *, y_reference: Sequence[str] | np.ndarray | None = None,
                      labels: Sequence[str] | None = None) -> LabelSummary:
    """:func:`~models.evaluation.metrics.classification_summary` of always predicting the majority class
    of ``y_reference`` (default ``y_true``): accuracy, balanced accuracy and macro-F1 of the baseline."""
    return classification_summary(y_true, majority_predictions(y_true, y_reference=y_reference), labels=labels)


def majority_scores(y_true: Sequence[str] | np.ndarray, *, labels: Sequence[str],
                    y_reference: Sequence[str] | np.ndarray | None = None) -> np.ndarray:
    """One-hot scores of the baseline (every case ranked alike: AUC 0.5 for each class)."""
    predictions = majority_predictions(y_true, y_reference=y_reference)
    labels = list(labels)
    scores = np.zeros((predictions.size, len(labels)))
    if predictions[0] in labels:
        scores[:, labels.index(predictions[0])] = 1.0
    return scores
