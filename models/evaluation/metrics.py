"""Classification metrics in scikit-learn's calling style: ``metric(y_true, y_pred, *, labels=None)``.

Point estimates call scikit-learn (the reference everybody trusts); every one of them, and
:func:`classification_summary` (what cross-validation folds report), goes through the one input
check :func:`check_targets`. The bootstrap needs the same numbers thousands of times, so
:func:`metrics_from_codes` and :func:`fast_auc_ovr` recompute them from a confusion matrix and from
ranks; the tests hold both paths equal to scikit-learn.

Conventions, chosen so that a class absent from a (re)sample never crashes and never silently
counts as perfect:
- ``labels`` fixes the class order; default: sorted union of y_true and y_pred.
- Per-class recall/precision/F1 of a class with no support (or no predictions) is NaN in the
  per-class vector, and macro averages are taken over the classes present in ``y_true``.
- Specificity of a class is one-vs-rest: the share of the other classes' lesions not called this
  class; an abstention calls no class, so for the other classes it is a true negative (it is
  still a miss for its own class's recall). NaN when every lesion is of the class.
- Balanced accuracy is the mean recall over classes present in ``y_true`` (scikit-learn's rule).
- One-vs-rest ROC-AUC of a class absent from ``y_true`` (or present everywhere) is NaN; the macro
  AUC averages the defined ones.
- Hand & Till's multi-class AUC M (Hand DJ, Till RJ, Machine Learning 2001;45:171-186) averages
  the pairwise AUCs of the pairs of classes present in ``y_true``; unlike the one-vs-rest macro it
  does not depend on the class prevalences. scikit-learn's ``multi_class="ovo"`` is the same M.
- Quadratic-weighted kappa is defined on an ordered scale (:func:`grade_scale`): the HCC grades in
  the task's class order. A class off the scale (``non_hcc_cc``: not an HCC grade) has no distance
  to a grade, so lesions whose truth or prediction is off the scale are left out of the weighted
  kappa (and counted); the unweighted kappa keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import sklearn.metrics as sk
from scipy.stats import rankdata

ArrayLike = Sequence[Any] | np.ndarray


class LabelSummary(TypedDict):
    """The three hard-label figures every cross-validation fold and baseline reports."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float


class CodeMetrics(TypedDict):
    """:func:`metrics_from_codes`: the scalar label metrics and the per-class vectors (NaN: undefined)."""

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    cohen_kappa: float
    recall: np.ndarray
    specificity: np.ndarray
    precision: np.ndarray
    f1: np.ndarray


def check_targets(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The one shared input check: 1-D, equal length, non-empty; returns the class list to use."""
    true, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if true.ndim != 1 or true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {true.shape} and {pred.shape}")
    if true.size == 0:
        raise ValueError("no samples")
    if labels is None:
        labels = sorted(set(true.tolist()) | set(pred.tolist()))
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    unknown = set(true.tolist()) - set(labels)
    if unknown:
        raise ValueError(f"y_true holds labels outside {labels}: {sorted(map(str, unknown))}")
    return true, pred, labels


def check_scores(y_true: ArrayLike, y_score: ArrayLike, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """y_score is (n, len(labels)), finite; y_true holds only ``labels``."""
    true = np.asarray(y_true, dtype=object)
    score = np.asarray(y_score, dtype=np.float64)
    if score.ndim != 2 or score.shape != (true.shape[0], len(labels)):
        raise ValueError(f"y_score must be (n_samples, n_labels) = ({true.shape[0]}, {len(labels)}), "
                         f"got {score.shape}")
    if not np.isfinite(score).all():
        raise ValueError("y_score holds NaN or infinite values")
    unknown = set(true.tolist()) - set(labels)
    if unknown:
        raise ValueError(f"y_true holds labels outside {list(labels)}: {sorted(map(str, unknown))}")
    return true, score


NOT_GRADED = frozenset({"non_hcc_cc"})
"""Classes of the tasks that are not a step on the ordered grade scale."""


def grade_scale(task_classes: Sequence[str]) -> list[str]:
    """The ordered scale of a task: its classes in the task's order, without those not graded."""
    return [c for c in task_classes if c not in NOT_GRADED]


# --- point metrics (scikit-learn) ---------------------------------------------------------------


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """Rows are the truth, columns the prediction, in ``labels`` order (predictions outside
    ``labels``, such as "indeterminate", are not counted)."""
    true, pred, labels = check_targets(y_true, y_pred, labels)
    return np.asarray(sk.confusion_matrix(true, pred, labels=labels))


def accuracy_score(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> float:
    true, pred, _ = check_targets(y_true, y_pred, labels)
    return float(sk.accuracy_score(true, pred))


def balanced_accuracy_score(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> float:
    """Mean recall over the classes present in y_true."""
    true, pred, labels = check_targets(y_true, y_pred, labels)
    present = [c for c in labels if c in set(true.tolist())]
    return float(np.mean(recall_per_class(true, pred, labels=present)))


def _per_class(kind: str, y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str] | None) -> np.ndarray:
    true, pred, labels = check_targets(y_true, y_pred, labels)
    p, r, f, support = sk.precision_recall_fscore_support(true, pred, labels=labels, zero_division=np.nan)
    predicted = np.array([np.sum(pred == c) for c in labels])
    values: np.ndarray = {"precision": p, "recall": r, "f1": f}[kind].astype(np.float64)
    # Undefined without support (recall, F1) or without predictions (precision).
    undefined = (support == 0) if kind in ("recall", "f1") else (predicted == 0)
    values[undefined] = np.nan
    return values


def recall_per_class(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """Sensitivity of each class in ``labels`` order; NaN for a class absent from y_true."""
    return _per_class("recall", y_true, y_pred, labels)


def specificity_per_class(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None
                          ) -> np.ndarray:
    """One-vs-rest specificity of each class: scikit-learn's recall of "not this class" (so an
    abstention is a true negative for every class but its own); NaN when no lesion is of another class."""
    true, pred, labels = check_targets(y_true, y_pred, labels)
    out = np.full(len(labels), np.nan)
    for k, label in enumerate(labels):
        negative = true != label
        if negative.any():
            out[k] = sk.recall_score(negative, pred != label)
    return out


def precision_per_class(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """Positive predictive value of each class; NaN for a class never predicted."""
    return _per_class("precision", y_true, y_pred, labels)


def f1_per_class(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> np.ndarray:
    """F1 of each class (0 when the class is present but never predicted right); NaN when absent."""
    values = _per_class("f1", y_true, y_pred, labels)
    recall = _per_class("recall", y_true, y_pred, labels)
    values[np.isnan(values) & ~np.isnan(recall)] = 0.0
    return values


def macro_f1_score(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> float:
    """Mean F1 over the classes present in y_true (an absent class is not scored, not zero)."""
    true, pred, labels = check_targets(y_true, y_pred, labels)
    present = [c for c in labels if c in set(true.tolist())]
    return float(sk.f1_score(true, pred, labels=present, average="macro", zero_division=0))


def classification_summary(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None
                           ) -> LabelSummary:
    """Accuracy, balanced accuracy and macro-F1 of hard labels: what a cross-validation fold reports.

    Balanced accuracy is scikit-learn's (mean recall over the classes present in y_true).
    """
    true, pred, labels = check_targets(y_true, y_pred, labels)
    return {"accuracy": float(sk.accuracy_score(true, pred)),
            "balanced_accuracy": float(sk.balanced_accuracy_score(true, pred)),
            "macro_f1": macro_f1_score(true, pred, labels=labels)}


def cohen_kappa_score(y_true: ArrayLike, y_pred: ArrayLike, *, labels: Sequence[str] | None = None) -> float:
    """Agreement beyond chance; NaN when chance agreement is 1 (a single class everywhere)."""
    true, pred, labels = check_targets(y_true, y_pred, labels)
    cm = confusion_matrix(true, pred, labels=labels)
    if _chance_agreement(cm) >= 1.0:
        return float("nan")
    return float(sk.cohen_kappa_score(true, pred, labels=labels))


def quadratic_kappa(y_true: ArrayLike, y_pred: ArrayLike, *, scale: Sequence[str]) -> tuple[float, int]:
    """Quadratic-weighted kappa on the ordered ``scale`` and the number of lesions it used (those
    whose truth and prediction are both on the scale); NaN when undefined."""
    true, pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    on_scale = np.isin(true, list(scale)) & np.isin(pred, list(scale))
    used = int(on_scale.sum())
    if used == 0 or len(set(true[on_scale].tolist()) | set(pred[on_scale].tolist())) < 2:
        return float("nan"), used
    return float(sk.cohen_kappa_score(true[on_scale], pred[on_scale], labels=list(scale), weights="quadratic")), used


def hand_till_auc(y_true: ArrayLike, y_score: ArrayLike, *, labels: Sequence[str]) -> float:
    """Hand & Till's M over the pairs of classes present in y_true (scikit-learn's one-vs-one
    macro AUC when every class is present); NaN with fewer than two classes present."""
    true, score = check_scores(y_true, y_score, labels)
    present = [k for k, label in enumerate(labels) if np.any(true == label)]
    if len(present) == len(labels) and len(labels) > 2 and np.allclose(score.sum(axis=1), 1.0):
        order = np.argsort(np.asarray(labels, dtype=object))  # scikit-learn wants sorted labels
        return float(sk.roc_auc_score(true, score[:, order], multi_class="ovo",
                                      labels=[labels[k] for k in order]))
    return fast_hand_till(encode(true, labels), score)


def roc_auc_ovr(y_true: ArrayLike, y_score: ArrayLike, *, labels: Sequence[str]) -> np.ndarray:
    """One-vs-rest ROC-AUC of each class; NaN where the class is absent or is every sample."""
    true, score = check_scores(y_true, y_score, labels)
    out = np.full(len(labels), np.nan)
    for k, label in enumerate(labels):
        positive = true == label
        if 0 < positive.sum() < positive.size:
            out[k] = sk.roc_auc_score(positive, score[:, k])
    return out


def roc_auc_score(y_true: ArrayLike, y_score: ArrayLike, *, labels: Sequence[str]) -> float:
    """Binary tasks: the AUC of the second label (scikit-learn's positive class); several classes:
    the macro one-vs-rest AUC over the classes where it is defined."""
    per_class = roc_auc_ovr(y_true, y_score, labels=labels)
    if len(labels) == 2:
        return float(per_class[1])
    defined = per_class[~np.isnan(per_class)]
    return float(defined.mean()) if defined.size else float("nan")


def roc_curve_ovr(y_true: ArrayLike, y_score: ArrayLike, *, labels: Sequence[str]
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(false positive rate, true positive rate) of each class where defined."""
    true, score = check_scores(y_true, y_score, labels)
    out = {}
    for k, label in enumerate(labels):
        positive = true == label
        if 0 < positive.sum() < positive.size:
            fpr, tpr, _ = sk.roc_curve(positive, score[:, k])
            out[label] = (fpr, tpr)
    return out


def reliability_curve(y_true: ArrayLike, y_score: ArrayLike, *, labels: Sequence[str], n_bins: int = 10
                      ) -> dict[str, list[float]]:
    """Top-label reliability: per confidence bin, the mean confidence, the accuracy and the count.

    Also the expected calibration error (count-weighted gap), the figure a reliability diagram shows.
    """
    true, score = check_scores(y_true, y_score, labels)
    confidence = score.max(axis=1)
    correct = np.asarray(labels, dtype=object)[score.argmax(axis=1)] == true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    mean_conf, accuracy, count = [], [], []
    for b in range(n_bins):
        members = index == b
        count.append(int(members.sum()))
        mean_conf.append(float(confidence[members].mean()) if members.any() else float("nan"))
        accuracy.append(float(correct[members].mean()) if members.any() else float("nan"))
    weights = np.asarray(count) / max(1, len(true))
    gaps = np.abs(np.nan_to_num(np.asarray(mean_conf)) - np.nan_to_num(np.asarray(accuracy)))
    return {"bin_edges": edges.tolist(), "confidence": mean_conf, "accuracy": accuracy, "count": count,
            "ece": [float((weights * gaps).sum())]}


# --- the same numbers, fast (bootstrap) ---------------------------------------------------------


def _chance_agreement(cm: np.ndarray) -> float:
    n = cm.sum()
    return float((cm.sum(axis=0) * cm.sum(axis=1)).sum() / (n * n)) if n else float("nan")


def encode(values: ArrayLike, labels: Sequence[str]) -> np.ndarray:
    """Class indices in ``labels`` order; -1 for anything else (e.g. "indeterminate")."""
    lookup = {label: k for k, label in enumerate(labels)}
    return np.array([lookup.get(v, -1) for v in np.asarray(values, dtype=object).tolist()], dtype=np.int64)


def confusion_from_codes(true_codes: np.ndarray, pred_codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix by bincount; samples whose prediction is -1 are left out, as sklearn does."""
    keep = pred_codes >= 0
    flat = true_codes[keep] * n_classes + pred_codes[keep]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def metrics_from_codes(true_codes: np.ndarray, pred_codes: np.ndarray, n_classes: int) -> CodeMetrics:
    """Every label metric of this module from class codes (numpy only; see :func:`encode`).

    A prediction outside the classes (code -1, e.g. "indeterminate") is wrong for accuracy and a
    miss for its true class's recall, and is left out of the confusion matrix and kappa, exactly
    as scikit-learn does when given ``labels``.
    """
    cm = confusion_from_codes(true_codes, pred_codes, n_classes).astype(np.float64)
    support = np.bincount(true_codes, minlength=n_classes).astype(np.float64)
    predicted, hits = cm.sum(axis=0), np.diag(cm)
    negatives = float(true_codes.size) - support
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        specificity = np.where(negatives > 0, 1.0 - (predicted - hits) / negatives, np.nan)
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        f1 = np.where(support > 0, np.where(hits > 0, 2 * hits / (support + predicted), 0.0), np.nan)
    present = support > 0
    chance = _chance_agreement(cm)
    observed = hits.sum() / cm.sum() if cm.sum() else np.nan
    kappa = (observed - chance) / (1 - chance) if chance < 1.0 else np.nan
    total = float(true_codes.size)
    return {
        "accuracy": float(hits.sum() / total) if total else float("nan"),
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else float("nan"),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "cohen_kappa": float(kappa),
        "recall": recall, "specificity": specificity, "precision": precision, "f1": f1,
    }


def fast_auc_ovr(true_codes: np.ndarray, score: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class by the Mann-Whitney statistic on mid-ranks (ties count half)."""
    n, k = score.shape
    out = np.full(k, np.nan)
    ranks = rankdata(score, axis=0)
    for c in range(k):
        positive = true_codes == c
        n_pos = int(positive.sum())
        if 0 < n_pos < n:
            out[c] = (ranks[positive, c].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
    return out


def fast_hand_till(true_codes: np.ndarray, score: np.ndarray) -> float:
    """Hand & Till's M from class codes: the mean over present class pairs (i, j) of
    [A(i|j) + A(j|i)] / 2, each A a Mann-Whitney AUC on the two classes' lesions only."""
    present = [c for c in range(score.shape[1]) if np.any(true_codes == c)]
    if len(present) < 2:
        return float("nan")
    pairs = []
    for a_index, a in enumerate(present):
        for b in present[a_index + 1:]:
            rows = (true_codes == a) | (true_codes == b)
            is_a = true_codes[rows] == a
            n_a, n_b = int(is_a.sum()), int((~is_a).sum())
            ranks_a, ranks_b = rankdata(score[rows, a]), rankdata(score[rows, b])
            auc_a = (ranks_a[is_a].sum() - n_a * (n_a + 1) / 2) / (n_a * n_b)
            auc_b = (ranks_b[~is_a].sum() - n_b * (n_b + 1) / 2) / (n_a * n_b)
            pairs.append((auc_a + auc_b) / 2)
    return float(np.mean(pairs))


def fast_quadratic_kappa(true_codes: np.ndarray, pred_codes: np.ndarray, scale_codes: np.ndarray) -> float:
    """Quadratic-weighted kappa from codes, on the lesions whose truth and prediction are on the
    scale (``scale_codes``: class codes in grade order)."""
    position = np.full(max(int(true_codes.max(initial=0)), int(pred_codes.max(initial=0)), int(scale_codes.max())) + 2,
                       -1)
    position[scale_codes] = np.arange(scale_codes.size)
    t, p = position[true_codes], position[np.where(pred_codes < 0, -1, pred_codes)]
    keep = (t >= 0) & (p >= 0) & (pred_codes >= 0)
    size = scale_codes.size
    observed = np.bincount(t[keep] * size + p[keep], minlength=size * size).reshape(size, size).astype(np.float64)
    total = observed.sum()
    if total == 0:
        return float("nan")
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    grid = np.arange(size)
    weights = (grid[:, None] - grid[None, :]) ** 2
    disagreement = float((weights * expected).sum())
    return 1.0 - float((weights * observed).sum()) / disagreement if disagreement > 0 else float("nan")


@dataclass(frozen=True)
class PointMetric:
    """A registry entry: name, whether higher is better, and the scikit-learn-style function."""

    name: str
    function: Callable[..., Any]
    needs_scores: bool = False
    per_class: bool = False


METRICS: tuple[PointMetric, ...] = (
    PointMetric("accuracy", accuracy_score),
    PointMetric("balanced_accuracy", balanced_accuracy_score),
    PointMetric("macro_f1", macro_f1_score),
    PointMetric("cohen_kappa", cohen_kappa_score),
    PointMetric("recall", recall_per_class, per_class=True),
    PointMetric("specificity", specificity_per_class, per_class=True),
    PointMetric("precision", precision_per_class, per_class=True),
    PointMetric("f1", f1_per_class, per_class=True),
    PointMetric("roc_auc", roc_auc_score, needs_scores=True),
    PointMetric("roc_auc_ovr", roc_auc_ovr, needs_scores=True, per_class=True),
)
