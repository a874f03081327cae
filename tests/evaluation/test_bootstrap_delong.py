"""The patient-level bootstrap, and DeLong's test against pROC's worked example."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.evaluation.bootstrap import Interval, bootstrap, paired_difference, patient_resamples
from models.evaluation.delong import delong_ci, delong_covariance, delong_test
from models.evaluation.summary import BootstrapSettings, summarise

ASAH = Path(__file__).with_name("data") / "asah.csv"


def simulated(patients: int, seed: int, lesions_per_patient: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.repeat([f"P{i}" for i in range(patients)], lesions_per_patient).astype(object)
    y = rng.choice(["a", "b", "c"], ids.size).astype(object)
    p = np.where(rng.uniform(size=ids.size) < 0.6, y, rng.choice(["a", "b", "c"], ids.size)).astype(object)
    return y, p, ids


def accuracy_interval(y: np.ndarray, p: np.ndarray, ids: np.ndarray, n: int = 300) -> Interval:
    result = summarise(y, p, ids, labels=["a", "b", "c"], settings=BootstrapSettings(n_resamples=n, seed=1))
    interval = result["metrics"]["accuracy"]
    return Interval(interval["estimate"], interval["low"], interval["high"], interval["resamples"])


def test_interval_contains_estimate_and_is_seeded() -> None:
    y, p, ids = simulated(40, seed=2)
    first, again = accuracy_interval(y, p, ids), accuracy_interval(y, p, ids)
    assert first.low <= first.estimate <= first.high and first.low < first.high
    assert first == again
    assert first.estimate == pytest.approx(float(np.mean(y == p)))


def test_interval_shrinks_with_more_patients() -> None:
    widths = []
    for patients in (20, 80, 320):
        interval = accuracy_interval(*simulated(patients, seed=3))
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 2.5  # about sqrt(16) = 4 in theory


def test_resampling_draws_whole_patients() -> None:
    ids = np.array(["P1", "P1", "P1", "P2", "P3", "P3"], dtype=object)
    for indices in patient_resamples(ids, n_resamples=50, seed=0):
        drawn = ids[indices]
        for patient, size in (("P1", 3), ("P2", 1), ("P3", 2)):
            assert np.sum(drawn == patient) % size == 0  # all of a patient's lesions, or none
        assert len(set(indices.tolist())) <= 6


def test_patient_clustering_widens_the_interval() -> None:
    """Ten identical lesions per patient are one observation, not ten: the interval must be as wide
    as with one lesion per patient, which a lesion-level bootstrap would get wrong."""
    y, p, ids = simulated(30, seed=4, lesions_per_patient=1)
    repeated = accuracy_interval(np.repeat(y, 10), np.repeat(p, 10), np.repeat(ids, 10))
    single = accuracy_interval(y, p, ids)
    assert repeated.high - repeated.low == pytest.approx(single.high - single.low, rel=0.35)


def test_undefined_resamples_are_left_out_and_counted() -> None:
    ids = np.array(["P1", "P2", "P3"], dtype=object)
    truth = np.array([1, 0, 0])

    def only_when_both(indices: np.ndarray) -> dict[str, float]:
        t = truth[indices]
        return {"x": float(t.mean()) if 0 < t.sum() < t.size else float("nan")}

    result = bootstrap(only_when_both, ids, n_resamples=200, seed=0)["x"]
    assert isinstance(result, Interval) and 0 < result.resamples < 200


def test_paired_difference_of_identical_metrics_is_zero() -> None:
    y, p, ids = simulated(30, seed=5)
    hits = (y == p).astype(float)
    same = paired_difference(lambda r: hits[r].mean(), lambda r: hits[r].mean(), ids, n_resamples=100)
    assert same.difference.estimate == 0 and same.p_value == 1.0
    worse = paired_difference(lambda r: hits[r].mean() - 0.2, lambda r: hits[r].mean(), ids, n_resamples=100)
    assert worse.difference.high < 0 and worse.p_value < 0.05


def _asah() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with ASAH.open() as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    assert len(rows) == 113
    poor = np.array([r["outcome"] == "Poor" for r in rows])
    return poor, np.array([float(r["s100b"]) for r in rows]), np.array([float(r["wfns"]) for r in rows])


def test_delong_reproduces_procs_asah_example() -> None:
    """pROC's documented example (Robin X et al., BMC Bioinformatics 2011;12:77; pROC reference manual,
    ``ci.auc`` and ``roc.test`` on ``aSAH``): s100b AUC 0.7314, DeLong 95% CI 0.6301-0.8326;
    s100b vs wfns: Z = -2.209, p = 0.0272 (0.02718)."""
    poor, s100b, wfns = _asah()
    ci = delong_ci(poor, s100b)
    assert round(ci.auc, 4) == 0.7314
    assert (round(ci.low, 4), round(ci.high, 4)) == (0.6301, 0.8326)
    test = delong_test(poor, s100b, wfns)
    assert round(test.auc_b, 4) == 0.8237
    assert round(test.z, 3) == -2.209
    assert round(test.p_value, 5) == 0.02718


def test_delong_agrees_with_a_bootstrap_comparison() -> None:
    rng = np.random.default_rng(7)
    n = 300
    y = rng.uniform(size=n) < 0.4
    a = y * 1.0 + rng.normal(size=n)
    b = y * 0.6 + 0.5 * a + rng.normal(size=n)  # correlated with a, weaker
    aucs, cov = delong_covariance(y, np.vstack([a, b]))
    draws = []
    for indices in patient_resamples(np.arange(n).astype(str), n_resamples=1000, seed=1):
        boot_aucs, _ = delong_covariance(y[indices], np.vstack([a[indices], b[indices]]))
        draws.append(boot_aucs)
    draws = np.array(draws)
    assert np.sqrt(cov[0, 0]) == pytest.approx(draws[:, 0].std(), rel=0.15)
    se_difference = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert se_difference == pytest.approx((draws[:, 0] - draws[:, 1]).std(), rel=0.15)
    test = delong_test(y, a, b)
    boot_z = (aucs[0] - aucs[1]) / (draws[:, 0] - draws[:, 1]).std()
    assert test.z == pytest.approx(boot_z, rel=0.15)


def test_delong_edge_cases() -> None:
    y = np.array([0, 0, 1, 1])
    same = delong_test(y, [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4])
    assert same.difference == 0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="both positive and negative"):
        delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="binary"):
        delong_ci([0, 2], [0.1, 0.2])
