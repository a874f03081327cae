"""Confidence intervals by bootstrap over patients.

Lesions of one patient are not independent (same liver, scanner, contrast timing, reader's mood),
so resampling lesions would understate the uncertainty. Each resample draws patients with
replacement and takes all of each drawn patient's lesions. Intervals are percentile intervals;
a resample in which a metric is undefined (e.g. AUC with one class drawn) is left out of that
metric's interval and counted, never silently scored.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

Statistic = Callable[[np.ndarray], Mapping[str, float | np.ndarray]]


class IntervalJson(TypedDict):
    """An :class:`Interval` in a report (null where undefined: JSON has no NaN)."""

    estimate: float | None
    low: float | None
    high: float | None
    resamples: int


class PairedDifferenceJson(TypedDict):
    difference: IntervalJson
    p_value: float | None


@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile interval and how many resamples defined it."""

    estimate: float
    low: float
    high: float
    resamples: int

    def as_json(self) -> IntervalJson:
        def clean(value: float) -> float | None:
            return None if not np.isfinite(value) else float(value)

        return {"estimate": clean(self.estimate), "low": clean(self.low), "high": clean(self.high),
                "resamples": self.resamples}


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


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2.0
    valid = np.isfinite(values).sum(axis=0)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as intended
            low = np.nanquantile(values, alpha, axis=0)
            high = np.nanquantile(values, 1.0 - alpha, axis=0)
    return low, high, valid


def bootstrap(statistic: Statistic, patient_ids: Sequence[str] | np.ndarray, *, n_resamples: int = 1000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, Interval | list[Interval]]:
    """Percentile intervals of every value ``statistic(indices)`` returns, over patient resamples.

    ``statistic`` maps an array of lesion indices (with repeats) to named floats or per-class
    vectors; the estimate is its value on all lesions. Vectors give one interval per element.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(patient_ids)
    point = {k: np.asarray(v, dtype=np.float64) for k, v in statistic(np.arange(n)).items()}
    draws: dict[str, list[np.ndarray]] = {k: [] for k in point}
    for indices in patient_resamples(patient_ids, n_resamples=n_resamples, seed=seed):
        values = statistic(indices)
        for key in point:
            draws[key].append(np.asarray(values[key], dtype=np.float64))
    out: dict[str, Interval | list[Interval]] = {}
    for key, estimate in point.items():
        stacked = np.stack(draws[key])
        low, high, valid = _percentiles(stacked, confidence)
        if estimate.ndim == 0:
            out[key] = Interval(float(estimate), float(low), float(high), int(valid))
        else:
            out[key] = [Interval(float(e), float(lo), float(hi), int(v))
                        for e, lo, hi, v in zip(estimate, low, high, valid, strict=True)]
    return out


@dataclass(frozen=True)
class PairedDifference:
    """Bootstrap of ``metric(a) - metric(b)`` on the same patients' resamples."""

    difference: Interval
    p_value: float

    def as_json(self) -> PairedDifferenceJson:
        return {"difference": self.difference.as_json(),
                "p_value": None if not np.isfinite(self.p_value) else float(self.p_value)}


def paired_difference(metric: Callable[[np.ndarray], float], other: Callable[[np.ndarray], float],
                      patient_ids: Sequence[str] | np.ndarray, *, n_resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Difference of two metrics of the same cases (e.g. misregistered vs registered accuracy).

    The two-sided p-value is twice the smaller tail of the resampled differences around zero (the
    percentile-bootstrap test); it cannot go below 1/n_resamples-ish resolution, which is stated.
    """
    everyone = np.arange(len(patient_ids))
    estimate = metric(everyone) - other(everyone)
    diffs = np.array([metric(i) - other(i) for i in
                      patient_resamples(patient_ids, n_resamples=n_resamples, seed=seed)], dtype=np.float64)
    low, high, valid = _percentiles(diffs[:, None], confidence)
    interval = Interval(float(estimate), float(low[0]), float(high[0]), int(valid[0]))
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return PairedDifference(interval, float("nan"))
    if np.all(diffs == 0):
        return PairedDifference(interval, 1.0)
    tail = min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0)))
    return PairedDifference(interval, float(min(1.0, 2.0 * tail)))
