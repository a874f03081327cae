"""DeLong's test for two correlated ROC-AUCs (the same cases scored by a model and by readers).

DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach. Biometrics 1988;44:837-845. The
structural components are computed with mid-ranks as in Sun X, Xu W, Fast implementation of
DeLong's algorithm, IEEE Signal Processing Letters 2014;21:1389-1393, which is also what pROC's
``roc.test(method="delong")`` and ``ci.auc(method="delong")`` compute. scikit-learn has no DeLong.

Lesions of one patient are not independent. Given ``clusters`` (the patient of each lesion), the
structural components are summed per patient and the variance is Obuchowski's clustered one
(Obuchowski NA, Nonparametric analysis of clustered ROC curve data, Biometrics 1997;53:567-578),
which reduces to DeLong's when every patient has one lesion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata


def _check(y_true: Sequence[int] | np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positive = np.asarray(y_true)
    if positive.ndim != 1:
        raise ValueError("y_true must be 1-D")
    values = set(np.unique(positive).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"y_true must be binary 0/1, got values {sorted(values)[:5]}")
    positive = positive.astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != positive.size:
        raise ValueError(f"scores must have {positive.size} columns, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values")
    if positive.all() or not positive.any():
        raise ValueError("DeLong needs both positive and negative cases")
    return positive, scores


def delong_covariance(y_true: Sequence[int] | np.ndarray, scores: np.ndarray,
                      clusters: Sequence[str] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of each row of ``scores`` (k x n; higher = more likely positive) and their k x k
    DeLong covariance matrix; with ``clusters``, Obuchowski's clustered covariance."""
    positive, scores = _check(y_true, scores)
    x, y = scores[:, positive], scores[:, ~positive]
    m, n = x.shape[1], y.shape[1]
    tx, ty = rankdata(x, axis=1), rankdata(y, axis=1)
    tz = rankdata(np.concatenate([x, y], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) / m - (m + 1) / 2.0) / n
    v01 = (tz[:, :m] - tx) / n  # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m  # and of the negatives
    if clusters is None:
        return aucs, np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, _clustered(aucs, v01, v10, positive, np.asarray(clusters, dtype=object))


def _clustered(aucs: np.ndarray, v_pos: np.ndarray, v_neg: np.ndarray, positive: np.ndarray,
               clusters: np.ndarray) -> np.ndarray:
    """Obuchowski (1997) eq. 3-5: per-patient sums of the components, centred on count x AUC."""
    if clusters.shape != positive.shape:
        raise ValueError(f"clusters must have {positive.size} entries, got {clusters.shape}")
    _, code = np.unique(clusters.astype(str), return_inverse=True)
    count = int(code.max()) + 1
    k, m, n = aucs.size, v_pos.shape[1], v_neg.shape[1]
    sum_pos, sum_neg = np.zeros((count, k)), np.zeros((count, k))
    np.add.at(sum_pos, code[positive], v_pos.T)
    np.add.at(sum_neg, code[~positive], v_neg.T)
    m_c = np.bincount(code[positive], minlength=count)[:, None]
    n_c = np.bincount(code[~positive], minlength=count)[:, None]
    d_pos, d_neg = sum_pos - m_c * aucs, sum_neg - n_c * aucs
    with_pos, with_neg = int((m_c > 0).sum()), int((n_c > 0).sum())
    s10 = with_pos / ((with_pos - 1) * m) * d_pos.T @ d_pos if with_pos > 1 else np.zeros((k, k))
    s01 = with_neg / ((with_neg - 1) * n) * d_neg.T @ d_neg if with_neg > 1 else np.zeros((k, k))
    s11 = count / (count - 1) * d_pos.T @ d_neg
    covariance: np.ndarray = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    return covariance


@dataclass(frozen=True)
class AucInterval:
    auc: float
    low: float
    high: float
    std_error: float


def delong_ci(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, *,
              confidence: float = 0.95, clusters: Sequence[str] | np.ndarray | None = None) -> AucInterval:
    """AUC with its DeLong normal-approximation interval, clipped to [0, 1] as pROC does."""
    aucs, cov = delong_covariance(y_true, np.asarray(score, dtype=np.float64)[None, :], clusters)
    se = float(np.sqrt(cov[0, 0]))
    z = float(norm.ppf(0.5 + confidence / 2.0))
    auc = float(aucs[0])
    return AucInterval(auc, max(0.0, auc - z * se), min(1.0, auc + z * se), se)


@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    difference: float  # auc_a - auc_b
    z: float
    p_value: float
    n_positive: int
    n_negative: int

    def as_json(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def delong_test(y_true: Sequence[int] | np.ndarray, score_a: Sequence[float] | np.ndarray,
                score_b: Sequence[float] | np.ndarray, *,
                clusters: Sequence[str] | np.ndarray | None = None) -> DeLongResult:
    """Two-sided test of AUC(a) = AUC(b) on the same cases; Z = (AUC_a - AUC_b) / SE (clustered by
    patient when ``clusters`` is given)."""
    positive = np.asarray(y_true).astype(bool)
    aucs, cov = delong_covariance(positive, np.vstack([score_a, score_b]), clusters)
    variance = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
    difference = float(aucs[0] - aucs[1])
    if variance <= 0:
        # Identical (or perfectly separating) scores: no difference can be detected.
        z, p = (0.0, 1.0) if difference == 0 else (float("nan"), float("nan"))
    else:
        z = difference / float(np.sqrt(variance))
        p = float(2.0 * norm.sf(abs(z)))
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, float(z), p,
                        int(positive.sum()), int((~positive).sum()))
