"""Confidence intervals by bootstrap over patients: BCa where it is defined, else percentile.

Lesions of one patient are not independent (same liver, scanner, contrast timing, reader's mood),
so resampling lesions would understate the uncertainty. Each resample draws patients with
replacement and takes all of each drawn patient's lesions; 2,000 resamples by default.

The interval is the bias-corrected and accelerated (BCa) one (Efron B, Tibshirani RJ, An
Introduction to the Bootstrap, 1993, ch. 14.3, eq. 14.10, 14.14, 14.15), because a percentile interval of a
skewed or biased statistic (a recall near 1, an AUC of a class with few patients) has coverage
off the nominal level:

- bias correction ``z0 = Phi^-1(share of replicates below the estimate)``, replicates equal to the
  estimate counting half (as scipy.stats.bootstrap does; it matters for accuracies, which tie);
- acceleration ``a = sum d^3 / (6 (sum d^2)^1.5)``, ``d = mean(theta_-g) - theta_-g``, from the
  jackknife that leaves out one *patient* at a time: the resampling unit must be the jackknife's;
- the endpoints are the replicates' quantiles at ``Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q)))``.

Where BCa is undefined the interval is the percentile one, and ``ci_method`` says which was used:
fewer than two replicates, all replicates equal, the estimate outside the replicates (z0
infinite), a jackknife value undefined or all alike (no acceleration), or ``1 - a (z0 + z_q) <= 0``.
A resample in which a metric is undefined (e.g. AUC with one class drawn) is left out of that
metric's interval and counted, never silently scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

import numpy as np
from scipy.special import ndtr, ndtri

Statistic = Callable[[np.ndarray], Mapping[str, float | np.ndarray]]
CiMethod = Literal["bca", "percentile"]
DEFAULT_RESAMPLES = 2000


class IntervalJson(TypedDict):
    """An :class:`Interval` in a report (null where undefined: JSON has no NaN); ``n`` is the
    class's support where the interval is one class's."""

    estimate: float | None
    low: float | None
    high: float | None
    resamples: int
    ci_method: str
    n: NotRequired[int]


class PairedDifferenceJson(TypedDict):
    difference: IntervalJson
    p_value: float | None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval, how many resamples defined it and how it was formed."""

    estimate: float
    low: float
    high: float
    resamples: int
    method: CiMethod = "percentile"

    def as_json(self) -> IntervalJson:
        def clean(value: float) -> float | None:
            return None if not np.isfinite(value) else float(value)

        return {"estimate": clean(self.estimate), "low": clean(self.low), "high": clean(self.high),
                "resamples": self.resamples, "ci_method": self.method}


def patient_groups(patient_ids: Sequence[str] | np.ndarray) -> list[np.ndarray]:
    """Lesion indices of each patient, in first-seen order of the patients."""
    ids = np.asarray(patient_ids, dtype=object)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("patient_ids must be a non-empty 1-D sequence")
    order: dict[object, list[int]] = {}
    for index, patient in enumerate(ids.tolist()):
        order.setdefault(patient, []).append(index)
    return [np.asarray(indices, dtype=np.int64) for indices in order.values()]


def patient_resamples(patient_ids: Sequence[str] | np.ndarray, *, n_resamples: int, seed: int
                      ) -> Iterator[np.ndarray]:
    """Lesion indices of each resample: as many patients as there are, drawn with replacement."""
    groups = patient_groups(patient_ids)
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(groups), size=len(groups))
        yield np.concatenate([groups[g] for g in drawn])


def patient_jackknife(patient_ids: Sequence[str] | np.ndarray) -> Iterator[np.ndarray]:
    """Lesion indices without one patient, for each patient in first-seen order (all of a
    patient's lesions leave together, as they are drawn together by :func:`patient_resamples`)."""
    groups = patient_groups(patient_ids)
    everyone = np.arange(sum(g.size for g in groups))
    for members in groups:
        keep = np.ones(everyone.size, dtype=bool)
        keep[members] = False
        yield everyone[keep]


def acceleration(jackknife: np.ndarray) -> np.ndarray:
    """Efron's acceleration of each column of the leave-one-cluster-out values (clusters x values):
    ``sum d^3 / (6 (sum d^2)^1.5)``, ``d = mean - theta_-g``; NaN where a value is undefined or all
    are alike (the jackknife then says nothing about skewness)."""
    values = np.asarray(jackknife, dtype=np.float64)
    values = values.reshape(values.shape[0], -1)
    with np.errstate(all="ignore"):
        d = values.mean(axis=0) - values
        spread = (d ** 2).sum(axis=0)
        a = (d ** 3).sum(axis=0) / (6.0 * spread ** 1.5)
        # All alike up to rounding: a would be the skewness of rounding noise.
        scale = 1e-12 * np.maximum(1.0, np.abs(values).max(axis=0, initial=0.0))
        alike = ~(spread > values.shape[0] * scale ** 2)
    degenerate = ~np.isfinite(values).all(axis=0) | alike
    return np.where(degenerate, np.nan, a)


TIE = 1e-10
"""Values this close (relative to 1 or their size) are ties: an accuracy or a difference of
accuracies computed along two paths may differ by rounding, which must not decide its side."""


def share_below(values: np.ndarray, reference: float) -> float:
    """The share of ``values`` below ``reference``, ties (within :data:`TIE`) counting half."""
    tie = np.abs(values - reference) <= TIE * max(1.0, abs(reference))
    return float((np.count_nonzero((values < reference) & ~tie) + 0.5 * np.count_nonzero(tie)) / values.size)


def bias_correction(replicates: np.ndarray, estimate: float) -> float:
    """``z0 = Phi^-1(p)``, p the share of the finite replicates below ``estimate`` (ties half, as
    scipy.stats.bootstrap counts them); infinite when the estimate is outside them, NaN without
    replicates."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0 or not np.isfinite(estimate):
        return float("nan")
    return float(ndtri(share_below(finite, estimate)))


def bca_levels(z0: float, a: float, confidence: float) -> tuple[float, float]:
    """The quantile levels of the BCa endpoints (NaN where the transformation breaks down)."""
    levels = []
    for q in ((1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0):
        shifted = z0 + float(ndtri(q))
        denominator = 1.0 - a * shifted
        levels.append(float(ndtr(z0 + shifted / denominator)) if denominator > 0 else float("nan"))
    return levels[0], levels[1]


def _quantiles(values: np.ndarray, levels: tuple[float, float]) -> tuple[float, float]:
    low, high = np.quantile(values, levels)
    return float(low), float(high)


def interval_of(estimate: float, replicates: np.ndarray, jackknife: np.ndarray, confidence: float,
                *, bca: bool = True) -> Interval:
    """The interval of one statistic from its replicates (NaN ones left out) and its
    leave-one-patient-out values: BCa where defined, else percentile (module docstring)."""
    finite = replicates[np.isfinite(replicates)]
    valid = int(finite.size)
    if valid == 0:
        return Interval(estimate, float("nan"), float("nan"), 0)
    alpha = (1.0 - confidence) / 2.0
    percentile = Interval(estimate, *_quantiles(finite, (alpha, 1.0 - alpha)), valid)
    if not bca or valid < 2 or np.ptp(finite) <= TIE * max(1.0, float(np.abs(finite).max())):
        return percentile
    z0, a = bias_correction(finite, estimate), float(acceleration(jackknife)[0])
    levels = bca_levels(z0, a, confidence) if np.isfinite(z0) and np.isfinite(a) else (float("nan"),) * 2
    if not np.isfinite(levels).all():
        return percentile
    return Interval(estimate, *_quantiles(finite, levels), valid, "bca")


def _collect(statistic: Statistic, point: Mapping[str, np.ndarray], index_sets: Iterator[np.ndarray]
             ) -> dict[str, list[np.ndarray]]:
    """Each named value of ``statistic`` on each set of lesion indices."""
    values: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for indices in index_sets:
        result = statistic(indices)
        for key in point:
            values[key].append(np.asarray(result[key], dtype=np.float64))
    return values


def _stack(values: list[np.ndarray], key: str, shape: tuple[int, ...]) -> np.ndarray:
    stacked = np.stack(values) if values else np.empty((0, *shape))
    if stacked.shape[1:] != shape:
        raise ValueError(f"statistic {key!r} changed shape: {shape} then {stacked.shape[1:]}")
    return stacked.reshape(stacked.shape[0], int(np.prod(shape)))


def bootstrap(statistic: Statistic, patient_ids: Sequence[str] | np.ndarray, *,
              n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0,
              bca: bool = True) -> dict[str, Interval | list[Interval]]:
    """Intervals of every value ``statistic(indices)`` returns, over patient resamples.

    ``statistic`` maps an array of lesion indices (with repeats) to named floats or per-class
    vectors; the estimate is its value on all lesions. Vectors give one interval per element.
    ``bca=False`` gives percentile intervals throughout.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    point = {k: np.asarray(v, dtype=np.float64) for k, v in statistic(np.arange(len(patient_ids))).items()}
    draws = _collect(statistic, point, patient_resamples(patient_ids, n_resamples=n_resamples, seed=seed))
    jack = _collect(statistic, point, patient_jackknife(patient_ids) if bca else iter(()))
    out: dict[str, Interval | list[Interval]] = {}
    for key, estimate in point.items():
        replicates, leave_one = _stack(draws[key], key, estimate.shape), _stack(jack[key], key, estimate.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            intervals = [interval_of(float(e), replicates[:, j], leave_one[:, j], confidence, bca=bca)
                         for j, e in enumerate(estimate.reshape(-1))]
        out[key] = intervals[0] if estimate.ndim == 0 else intervals
    return out


@dataclass(frozen=True)
class PairedDifference:
    """Bootstrap of ``metric(a) - metric(b)`` on the same patients' resamples."""

    difference: Interval
    p_value: float

    def as_json(self) -> PairedDifferenceJson:
        return {"difference": self.difference.as_json(),
                "p_value": None if not np.isfinite(self.p_value) else float(self.p_value)}


def percentile_p_value(differences: np.ndarray) -> float:
    """Twice the smaller tail of the resampled differences around zero (ties in both tails): the
    test that inverts the percentile interval."""
    zero = np.abs(differences) <= TIE
    if np.all(zero):
        return 1.0
    tail = min(float(np.mean((differences < 0) | zero)), float(np.mean((differences > 0) | zero)))
    return float(min(1.0, 2.0 * tail))


def bca_p_value(differences: np.ndarray, z0: float, a: float) -> float:
    """The two-sided p-value that inverts the BCa interval: the level ``1 - p`` whose BCa interval
    has 0 as an endpoint, so that p < 1 - confidence exactly when the interval excludes 0 (up to
    the replicates' resolution). 0 outside the replicates gives 0, as the percentile test does."""
    share = share_below(differences, 0.0)
    if share in (0.0, 1.0):
        return 0.0
    w = float(ndtri(share)) - z0
    if not 1.0 + a * w > 0:
        return percentile_p_value(differences)
    z = w / (1.0 + a * w) - z0
    return float(min(1.0, 2.0 * ndtr(-abs(z))))


def paired_difference(metric: Callable[[np.ndarray], float], other: Callable[[np.ndarray], float],
                      patient_ids: Sequence[str] | np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES,
                      confidence: float = 0.95, seed: int = 0, bca: bool = True) -> PairedDifference:
    """Difference of two metrics of the same cases (e.g. misregistered vs registered accuracy).

    The interval is BCa where defined (else percentile, as :func:`bootstrap`), and the two-sided
    p-value is the one that inverts that interval (:func:`bca_p_value`, or
    :func:`percentile_p_value`); it cannot resolve below about 1/n_resamples.
    """
    def difference(rows: np.ndarray) -> float:
        return metric(rows) - other(rows)

    estimate = difference(np.arange(len(patient_ids)))
    diffs = np.array([difference(i) for i in patient_resamples(patient_ids, n_resamples=n_resamples, seed=seed)],
                     dtype=np.float64)
    jack = np.array([difference(i) for i in patient_jackknife(patient_ids)] if bca else [], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = interval_of(float(estimate), diffs, jack, confidence, bca=bca)
    finite = diffs[np.isfinite(diffs)]
    if finite.size == 0:
        return PairedDifference(interval, float("nan"))
    if interval.method == "bca":
        p = bca_p_value(finite, bias_correction(finite, float(estimate)), float(acceleration(jack)[0]))
        return PairedDifference(interval, p)
    return PairedDifference(interval, percentile_p_value(finite))
