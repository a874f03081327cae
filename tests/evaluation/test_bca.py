"""BCa intervals of the patient bootstrap: against scipy.stats.bootstrap, a hand-checked clustered
jackknife, the fallbacks to percentile, and the paired test that inverts the interval."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import bootstrap as scipy_bootstrap
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from models.evaluation.bootstrap import (
    DEFAULT_RESAMPLES,
    Interval,
    acceleration,
    bca_levels,
    bias_correction,
    bootstrap,
    paired_difference,
    patient_jackknife,
    patient_resamples,
    percentile_p_value,
    share_below,
)
from models.evaluation.metrics import fast_auc_ovr
from models.evaluation.summary import BootstrapSettings, summarise


def singletons(n: int) -> np.ndarray:
    return np.array([f"P{i}" for i in range(n)], dtype=object)


def test_bca_of_a_skewed_mean_agrees_with_scipy_and_differs_from_percentile() -> None:
    """One lesion per patient is the ordinary bootstrap, so scipy's BCa (Efron & Tibshirani 14.3)
    on the same data must agree within Monte Carlo error: with independent resamples, 20,000 each,
    scipy's endpoints vary by SD 0.003 (low) and 0.008 (high) over seeds, so a difference of the
    two runs has SD 0.0045 and 0.0115; allowed: 3.5 SD. The percentile interval is 0.06 (low) and
    0.10 (high) lower, so the check could not pass with percentile endpoints."""
    x = np.random.default_rng(0).exponential(size=30)
    ours = bootstrap(lambda rows: {"mean": float(x[rows].mean())}, singletons(30), n_resamples=20000, seed=1)["mean"]
    assert isinstance(ours, Interval) and ours.method == "bca" and ours.resamples == 20000
    reference = scipy_bootstrap((x,), np.mean, method="BCa", n_resamples=20000, rng=2).confidence_interval
    assert ours.low == pytest.approx(reference.low, abs=0.016)
    assert ours.high == pytest.approx(reference.high, abs=0.04)
    percentile = scipy_bootstrap((x,), np.mean, method="percentile", n_resamples=20000, rng=2).confidence_interval
    assert ours.low - percentile.low > 0.04 and ours.high - percentile.high > 0.06


def test_report_intervals_agree_with_scipy_bca_for_accuracy_and_auc() -> None:
    """The report's own path (summarise: scikit-learn estimates, fast-path replicates, patient
    jackknife) against scipy's BCa of accuracy (a statistic with ties at the estimate) and of
    scikit-learn's AUC, on one lesion per patient."""
    rng = np.random.default_rng(5)
    n = 60
    truth = rng.uniform(size=n) < 0.5
    score = np.clip(0.5 + 0.35 * (truth - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    labels = np.array(["a", "b"], dtype=object)
    y, pred = labels[truth.astype(int)], labels[(score >= 0.5).astype(int)]
    pred[:3] = labels[1 - truth[:3].astype(int)]  # a few more errors: accuracy well inside (0, 1)
    summary = summarise(y, pred, singletons(n), labels=["a", "b"], y_score=np.column_stack([1 - score, score]),
                        settings=BootstrapSettings(n_resamples=4000, seed=7), curves=False)
    accuracy, auc = summary["metrics"]["accuracy"], summary["metrics"]["roc_auc"]
    assert accuracy["ci_method"] == "bca" and auc["ci_method"] == "bca"
    hits = (y == pred).astype(float)
    reference = scipy_bootstrap((hits,), np.mean, method="BCa", n_resamples=4000, rng=8).confidence_interval
    step = 1 / n  # accuracy moves in steps of one lesion
    assert (accuracy["low"], accuracy["high"]) == pytest.approx((reference.low, reference.high), abs=1.5 * step)
    reference = scipy_bootstrap((truth, score), lambda t, s: roc_auc_score(t, s), paired=True, vectorized=False,
                                method="BCa", n_resamples=4000, rng=9).confidence_interval
    assert (auc["low"], auc["high"]) == pytest.approx((reference.low, reference.high), abs=0.02)


HITS = {"P1": [1, 1, 0], "P2": [1], "P3": [0, 0], "P4": [1, 1], "P5": [0, 1, 1, 1]}


def test_clustered_jackknife_by_hand() -> None:
    """Accuracy of 12 lesions of 5 patients. Leaving out one patient (all of its lesions):
    P1 6/9, P2 7/11, P3 8/10, P4 6/10, P5 5/8; mean 4393/6600; sum d^2 = 54169/2178000,
    sum d^3 = -9837397/4791600000, a = sum d^3 / (6 (sum d^2)^1.5) = -0.0872387. A lesion-level
    jackknife would give 7/11 (8 times) and 8/11 (4 times): a = -4 / 24^1.5 = -0.0340."""
    ids = np.array([p for p, hits in HITS.items() for _ in hits], dtype=object)
    hits = np.array([h for values in HITS.values() for h in values], dtype=float)
    left_out = [sorted(set(range(12)) - set(rows.tolist())) for rows in patient_jackknife(ids)]
    assert left_out == [[0, 1, 2], [3], [4, 5], [6, 7], [8, 9, 10, 11]]
    values = np.array([hits[rows].mean() for rows in patient_jackknife(ids)])
    by_hand = [Fraction(6, 9), Fraction(7, 11), Fraction(8, 10), Fraction(6, 10), Fraction(5, 8)]
    assert values == pytest.approx([float(v) for v in by_hand], abs=1e-15)
    mean = sum(by_hand) / 5
    assert mean == Fraction(4393, 6600)
    d = [mean - v for v in by_hand]
    assert sum(x ** 2 for x in d) == Fraction(54169, 2178000)
    assert sum(x ** 3 for x in d) == Fraction(-9837397, 4791600000)
    a = float(acceleration(values)[0])
    assert a == pytest.approx(-9837397 / 4791600000 / (6 * (54169 / 2178000) ** 1.5), rel=1e-12)
    assert a == pytest.approx(-0.0872387, abs=1e-7)
    lesion_level = np.array([np.delete(hits, i).mean() for i in range(12)])
    assert float(acceleration(lesion_level)[0]) == pytest.approx(-4 / 24 ** 1.5, rel=1e-12)

    # The whole interval from these parts: z0 from the replicates, levels by eq. 14.10, quantiles.
    result = bootstrap(lambda rows: {"accuracy": float(hits[rows].mean())}, ids, n_resamples=500, seed=4)["accuracy"]
    replicates = np.array([hits[rows].mean() for rows in patient_resamples(ids, n_resamples=500, seed=4)])
    share = (np.sum(replicates < 8 / 12) + np.sum(replicates <= 8 / 12)) / 1000
    z0 = float(norm.ppf(share))
    assert bias_correction(replicates, 8 / 12) == pytest.approx(z0, rel=1e-12)
    low_level = norm.cdf(z0 + (z0 - 1.959963985) / (1 - a * (z0 - 1.959963985)))
    high_level = norm.cdf(z0 + (z0 + 1.959963985) / (1 - a * (z0 + 1.959963985)))
    assert bca_levels(z0, a, 0.95) == pytest.approx((low_level, high_level), abs=1e-9)
    assert isinstance(result, Interval) and result.method == "bca"
    assert (result.low, result.high) == pytest.approx(tuple(np.quantile(replicates, [low_level, high_level])),
                                                      abs=1e-9)


def test_bca_levels_reduce_to_percentile_without_bias_or_skew() -> None:
    assert bca_levels(0.0, 0.0, 0.95) == pytest.approx((0.025, 0.975), abs=1e-12)
    low, high = bca_levels(0.1, 0.05, 0.95)
    assert low == pytest.approx(norm.cdf(0.1 + (0.1 - norm.ppf(0.975)) / (1 - 0.05 * (0.1 - norm.ppf(0.975)))))
    assert 0.025 < low < high and high > 0.975  # bias up and positive skew move both levels up
    assert np.isnan(bca_levels(0.0, 1.0, 0.95)[1])  # 1 - a (z0 + z) <= 0: undefined


def test_fallbacks_to_percentile_where_bca_is_undefined() -> None:
    ids = singletons(12)
    x = np.arange(12, dtype=float)
    x[[3, 7]] = 20.0  # the maximum is held by two patients

    def statistics(rows: np.ndarray) -> dict[str, float]:
        return {"constant": 1.0,  # all replicates equal
                "distinct": float(len(set(rows.tolist()))),  # the estimate (12) above every replicate
                "maximum": float(x[rows].max())}  # varies, but every jackknife value is 20: no acceleration

    result = bootstrap(statistics, ids, n_resamples=300, seed=0)
    assert all(isinstance(i, Interval) and i.method == "percentile" for i in result.values())
    maximum = result["maximum"]
    assert isinstance(maximum, Interval) and maximum.low < maximum.high == 20.0
    assert np.isnan(acceleration(np.full(12, 20.0))[0])
    assert np.isfinite(bias_correction(np.array([19.0, 20.0, 20.0]), 20.0))


def test_a_class_held_by_one_patient_has_no_jackknife_and_falls_back() -> None:
    """The positives all belong to P0: leaving P0 out leaves the AUC undefined, so BCa cannot be
    accelerated; resamples without P0 are left out and counted, as before."""
    rng = np.random.default_rng(1)
    ids = np.array(["P0"] * 3 + [f"P{i}" for i in range(1, 21)], dtype=object)
    truth = np.r_[np.ones(3, dtype=int), np.zeros(20, dtype=int)]
    score = np.column_stack([1 - (s := rng.uniform(size=23)), s])

    def auc(rows: np.ndarray) -> dict[str, float]:
        return {"auc": float(fast_auc_ovr(truth[rows], score[rows])[1])}

    result = bootstrap(auc, ids, n_resamples=300, seed=2)["auc"]
    assert isinstance(result, Interval) and result.method == "percentile" and result.low < result.high
    assert 0 < result.resamples < 300
    assert bootstrap(auc, ids, n_resamples=300, seed=2, bca=False)["auc"] == result


def test_paired_p_value_inverts_the_bca_interval() -> None:
    """p < 1 - confidence exactly when the interval leaves out 0: the interval at level 1 - p has
    0 as an endpoint (to the replicates' resolution), and the 95% one leaves out 0 iff p < 0.05."""
    rng = np.random.default_rng(3)
    ids = np.repeat(singletons(50), 2)
    base = rng.exponential(size=100)
    other = base + rng.normal(0.05, 0.6, size=100)

    def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda rows: float(values[rows].mean())

    test = paired_difference(mean_of(other), mean_of(base), ids, n_resamples=4000, seed=5)
    assert test.difference.method == "bca" and 0.001 < test.p_value < 0.05
    at_p = paired_difference(mean_of(other), mean_of(base), ids, n_resamples=4000, seed=5,
                             confidence=1 - test.p_value)
    spread = test.difference.high - test.difference.low
    assert min(abs(at_p.difference.low), abs(at_p.difference.high)) < 0.01 * spread
    assert (test.p_value < 0.05) == (test.difference.low > 0 or test.difference.high < 0)
    for shift in (-0.2, -0.15, -0.1, 0.0, 0.1):
        shifted = paired_difference(mean_of(other + shift), mean_of(base), ids, n_resamples=1000, seed=6)
        excludes = shifted.difference.low > 0 or shifted.difference.high < 0
        assert (shifted.p_value < 0.05) == excludes, shift


def test_two_thousand_resamples_by_default() -> None:
    assert DEFAULT_RESAMPLES == 2000 and BootstrapSettings().n_resamples == 2000
    result = bootstrap(lambda rows: {"x": float(rows.size)}, singletons(3))["x"]
    assert isinstance(result, Interval) and result.resamples == 2000


def test_rounding_does_not_decide_a_tie() -> None:
    """0.1 + 0.2 is 0.30000000000000004: an accuracy computed along two paths may differ by rounding,
    which must count as a tie with the estimate (z0) and with zero (the paired test)."""
    assert share_below(np.array([0.1 + 0.2, 0.3, 0.2, 0.4]), 0.3) == 0.5
    assert bias_correction(np.array([0.1 + 0.2, 0.3]), 0.3) == 0.0
    assert percentile_p_value(np.array([1e-17, -1e-17, 0.0])) == 1.0
    assert percentile_p_value(np.array([1e-17, 0.5, 0.25, 0.75])) == 0.5  # the rounding zero is in both tails
