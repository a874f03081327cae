"""Every metric of one set of predictions, each with its patient-level bootstrap interval.

Point estimates come from scikit-learn (:mod:`models.evaluation.metrics`); the intervals from the
numpy fast path on the same resamples, so a report of thousands of resamples stays quick. ROC
bands are the pointwise interval of the true positive rate on a fixed grid of false positive rates.

Intervals are BCa over 2,000 patient resamples, the acceleration from the leave-one-patient-out
jackknife of the same fast path; where BCa is undefined (a class with one patient, a recall of 1
in every resample, ...) the percentile interval, and each interval's ``ci_method`` says which
(:mod:`models.evaluation.bootstrap`). Every per-class entry carries ``n``, the class's support.
Multi-class AUC is given twice under ``auc``: the one-vs-rest macro average (``macro_ovr``, the
same as ``roc_auc``) and Hand & Till's M (``hand_till``); kappa twice under ``kappa``: unweighted
(``cohen_kappa``) and quadratic-weighted on the grade scale. ``resamples_lacking_class`` counts
the resamples in which a class was not drawn, where the macro averages change their definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from models.abstention import INDETERMINATE, confusion_with_abstention
from models.evaluation import metrics as m
from models.evaluation.bootstrap import DEFAULT_RESAMPLES, Interval, IntervalJson, Statistic, bootstrap

SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "roc_auc")
PER_CLASS_METRICS = ("recall", "specificity", "precision", "f1", "roc_auc_ovr")
FPR_GRID = np.linspace(0.0, 1.0, 51)


@dataclass(frozen=True)
class BootstrapSettings:
    """Patient resamples, confidence level and the fixed seed that makes a report reproducible."""

    n_resamples: int = DEFAULT_RESAMPLES
    confidence: float = 0.95
    seed: int = 0


def tpr_at(fpr_grid: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The ROC curve's true positive rate at each grid false positive rate (step interpolation
    upward, as the empirical curve is drawn); NaN when a class is missing."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(fpr_grid.shape, np.nan)
    order = np.argsort(-score, kind="mergesort")
    s, p = score[order], positive[order]
    last_of_tie = np.r_[np.diff(s) != 0, True]
    tps = np.cumsum(p)[last_of_tie] / n_pos
    fps = np.cumsum(~p)[last_of_tie] / n_neg
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    tpr: np.ndarray = np.interp(fpr_grid, fps, tps)
    return tpr


def _label_values(codes: m.CodeMetrics) -> dict[str, float | np.ndarray]:
    return {"accuracy": codes["accuracy"], "balanced_accuracy": codes["balanced_accuracy"],
            "macro_f1": codes["macro_f1"], "cohen_kappa": codes["cohen_kappa"], "recall": codes["recall"],
            "specificity": codes["specificity"], "precision": codes["precision"], "f1": codes["f1"]}


def _statistic(true_codes: np.ndarray, pred_codes: np.ndarray, scores: np.ndarray | None,
               n_classes: int, scale_codes: np.ndarray | None) -> Statistic:
    def statistic(indices: np.ndarray) -> dict[str, float | np.ndarray]:
        t = true_codes[indices]
        values = _label_values(m.metrics_from_codes(t, pred_codes[indices], n_classes))
        if scale_codes is not None:
            values["kappa_quadratic"] = m.fast_quadratic_kappa(t, pred_codes[indices], scale_codes)
        if scores is not None:
            s = scores[indices]
            auc = m.fast_auc_ovr(t, s)
            values["roc_auc_ovr"] = auc
            defined = auc[~np.isnan(auc)]
            values["roc_auc"] = auc[1] if n_classes == 2 else (defined.mean() if defined.size else np.nan)
            values["hand_till"] = m.fast_hand_till(t, s)
            for c in range(n_classes):
                values[f"tpr_{c}"] = tpr_at(FPR_GRID, t == c, s[:, c])
        return values
    return statistic


def _point(true: np.ndarray, pred: np.ndarray, labels: list[str], scores: np.ndarray | None,
           scale: list[str] | None) -> dict[str, float | np.ndarray]:
    """The point estimates, from scikit-learn."""
    point: dict[str, float | np.ndarray] = {
        "accuracy": m.accuracy_score(true, pred, labels=labels),
        "balanced_accuracy": m.balanced_accuracy_score(true, pred, labels=labels),
        "macro_f1": m.macro_f1_score(true, pred, labels=labels),
        "cohen_kappa": m.cohen_kappa_score(true, pred, labels=labels),
        "recall": m.recall_per_class(true, pred, labels=labels),
        "specificity": m.specificity_per_class(true, pred, labels=labels),
        "precision": m.precision_per_class(true, pred, labels=labels),
        "f1": m.f1_per_class(true, pred, labels=labels),
    }
    if scale is not None:
        point["kappa_quadratic"] = m.quadratic_kappa(true, pred, scale=scale)[0]
    if scores is not None:
        point["roc_auc"] = m.roc_auc_score(true, scores, labels=labels)
        point["roc_auc_ovr"] = m.roc_auc_ovr(true, scores, labels=labels)
        point["hand_till"] = m.hand_till_auc(true, scores, labels=labels)
    return point


GROUPED = {"roc_auc": ("auc", "macro_ovr"), "hand_till": ("auc", "hand_till"),
           "cohen_kappa": ("kappa", "unweighted"), "kappa_quadratic": ("kappa", "quadratic")}
"""Metrics also shown side by side under one name: ``auc.macro_ovr`` / ``auc.hand_till``, ``kappa.*``."""


def _intervals_json(point: dict[str, float | np.ndarray], intervals: dict[str, Interval | list[Interval]],
                    labels: list[str], support: np.ndarray) -> dict[str, IntervalJson | dict[str, IntervalJson]]:
    """Intervals under the scikit-learn point estimates; per-class ones with the class's support ``n``."""
    out: dict[str, IntervalJson | dict[str, IntervalJson]] = {}
    grouped: dict[str, dict[str, IntervalJson]] = {}
    for name, value in point.items():
        interval = intervals[name]
        if isinstance(interval, Interval):
            entry = replace(interval, estimate=float(value)).as_json()
            if name in GROUPED:
                group, key = GROUPED[name]
                grouped.setdefault(group, {})[key] = entry
            if name not in ("hand_till", "kappa_quadratic"):
                out[name] = entry
        else:
            out[name] = {label: replace(i, estimate=float(v)).as_json() | {"n": int(n)}
                         for label, v, i, n in zip(labels, np.asarray(value), interval, support, strict=True)}
    return out | grouped


def summarise(y_true: Sequence[str] | np.ndarray, y_pred: Sequence[str] | np.ndarray,
              patient_ids: Sequence[str] | np.ndarray, *, labels: Sequence[str],
              y_score: np.ndarray | None = None, settings: BootstrapSettings = BootstrapSettings(),
              curves: bool = True, scale: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics with intervals, confusion matrix, ROC curves with bands and the reliability table.

    ``scale``: the ordered grades for the quadratic-weighted kappa (:func:`metrics.grade_scale`);
    without it that kappa is not computed (an arbitrary class order has no distances).
    """
    labels = list(labels)
    true, pred, labels = m.check_targets(y_true, y_pred, labels)
    patients = np.asarray(patient_ids, dtype=object)
    if patients.shape != true.shape:
        raise ValueError(f"patient_ids must match y_true's length {true.size}, got {patients.shape}")
    scores = None if y_score is None else m.check_scores(true, y_score, labels)[1]
    grades = None if scale is None else [c for c in scale if c in labels]
    true_codes, pred_codes = m.encode(true, labels), m.encode(pred, labels)
    scale_codes = None if grades is None else m.encode(grades, labels)
    intervals = bootstrap(_statistic(true_codes, pred_codes, scores, len(labels), scale_codes), patients,
                          n_resamples=settings.n_resamples, confidence=settings.confidence, seed=settings.seed)
    point = _point(true, pred, labels, scores, grades)
    recall = intervals["recall"]
    assert isinstance(recall, list)
    support = np.array([int(np.sum(true == label)) for label in labels])
    result: dict[str, Any] = {
        "lesions": int(true.size), "patients": int(len(set(patients.tolist()))),
        "support": dict(zip(labels, support.tolist(), strict=True)),
        "resamples_lacking_class": {label: settings.n_resamples - r.resamples for label, r in zip(labels, recall,
                                                                                                 strict=True)},
        "outside_classes": int(np.sum(pred_codes < 0)),
        "metrics": _intervals_json(point, intervals, labels, support),
        "confusion_matrix": {"labels": labels, "columns": [*labels, INDETERMINATE],
                             "matrix": confusion_with_abstention(true, pred, labels).tolist()},
    }
    if grades is not None:
        result["kappa_scale"] = {"order": grades,
                                 "lesions": m.quadratic_kappa(true, pred, scale=grades)[1],
                                 "rule": "lesions whose truth or prediction is off the grade scale are left out"}
    if scores is not None and curves:
        result |= _curves(intervals, point, labels, true, scores, support)
    return result


def _curves(intervals: dict[str, Interval | list[Interval]], point: dict[str, float | np.ndarray],
            labels: list[str], true: np.ndarray, scores: np.ndarray, support: np.ndarray) -> dict[str, Any]:
    roc = {}
    for c, label in enumerate(labels):
        bands = intervals[f"tpr_{c}"]
        assert isinstance(bands, list)
        if np.isnan(np.asarray(point["roc_auc_ovr"])[c]):
            continue
        roc[label] = {"fpr": FPR_GRID.tolist(), "tpr": [b.estimate for b in bands],
                      "tpr_low": [b.low for b in bands], "tpr_high": [b.high for b in bands],
                      "ci_method": [b.method for b in bands], "n": int(support[c])}
    return {"roc": roc, "reliability": m.reliability_curve(true, scores, labels=labels)}
