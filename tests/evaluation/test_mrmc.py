"""MRMC against the published Van Dyke analysis; the model against readers who really exist."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom
from sklearn.metrics import recall_score, roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from models.evaluation.bootstrap import patient_resamples
from models.evaluation.delong import delong_covariance, delong_test
from models.evaluation.mrmc import jackknife_covariance, obuchowski_rockette, single_test
from models.evaluation.summary import BootstrapSettings
from worker.evaluation.cases import ModelCases, Read, reader_scores
from worker.evaluation.reader_comparison import compare_readers, mid_p_mcnemar

VAN_DYKE = Path(__file__).with_name("data") / "vandyke.csv"
CLASSES = ["early_hcc", "progressed_hcc"]


def van_dyke() -> tuple[np.ndarray, np.ndarray]:
    """truth (114,) and ratings (2 modalities, 5 readers, 114 cases)."""
    with VAN_DYKE.open() as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    truth, ratings = np.zeros(114, dtype=int), np.zeros((2, 5, 114))
    for row in rows:
        reader, case = int(row["reader"]), int(row["case"])
        truth[case] = int(row["truth"])
        ratings[:, reader, case] = float(row["rating_0"]), float(row["rating_1"])
    return truth, ratings


def test_obuchowski_rockette_reproduces_the_published_van_dyke_analysis() -> None:
    """MRMCaov's documented analysis of the Van Dyke data (Smith BJ, Hillis SL, Pesce LL, MRMCaov
    README, ``mrmc(empirical_auc(truth, rating), treatment, reader, case, data = VanDyke)``, jackknife
    covariance; the same figures in RJafroc's OR analysis of dataset02): Var 0.0008022883, Cov1
    0.0003466137, Cov2 0.0003440748, Cov3 0.0002390284; F 4.456319 on (1, 15.25967), p 0.05166569;
    difference -0.04380032, SE 0.02074862, 95% CI -0.0879595 to 0.0003589; modality 1 alone 0.8970370,
    SE 0.03317360, df 12.74465, CI 0.8252236-0.9688505. The case-level jackknife here is computed
    with scikit-learn's AUC."""
    truth, ratings = van_dyke()

    def fom(rows: np.ndarray) -> np.ndarray:
        return np.array([roc_auc_score(truth[rows], ratings[i, j, rows]) for i in range(2) for j in range(5)])

    estimate, covariance = jackknife_covariance(fom, np.arange(114).astype(str))
    foms = estimate.reshape(2, 5)
    assert foms.mean(axis=1) == pytest.approx([0.8970370, 0.9408374], abs=5e-8)
    result = obuchowski_rockette(foms, covariance)
    c = result.components
    assert (c.var, c.cov1, c.cov2, c.cov3) == pytest.approx([0.0008022883, 0.0003466137, 0.0003440748, 0.0002390284],
                                                            abs=5e-11)
    assert result.statistic ** 2 == pytest.approx(4.456319, abs=5e-7)
    assert result.df == pytest.approx(15.25967, abs=5e-6)
    assert result.p_value == pytest.approx(0.05166569, abs=5e-9)
    assert (result.estimate, result.std_error) == pytest.approx((-0.04380032, 0.02074862), abs=5e-9)
    assert (result.low, result.high) == pytest.approx((-0.0879594986, 0.0003588544), abs=5e-10)
    alone = single_test(foms[0], covariance[:5, :5])
    assert (alone.std_error, alone.df) == pytest.approx((0.03317360, 12.74465), abs=5e-6)
    assert (alone.low, alone.high) == pytest.approx((0.8252236, 0.9688505), abs=5e-8)


def test_clustered_delong_is_delong_for_one_lesion_per_patient_and_matches_a_patient_bootstrap() -> None:
    rng = np.random.default_rng(3)
    patients = np.repeat(np.arange(80), 3).astype(str)
    shared = np.repeat(rng.normal(size=80), 3)  # a patient effect: lesions of one patient alike
    y = np.repeat(rng.uniform(size=80) < 0.4, 3) ^ (rng.uniform(size=240) < 0.15)
    a = y * 1.0 + shared + 0.5 * rng.normal(size=240)
    b = y * 0.7 + shared + 0.5 * rng.normal(size=240)
    plain = delong_covariance(y, np.vstack([a, b]))[1]
    singletons = delong_covariance(y, np.vstack([a, b]), np.arange(240).astype(str))[1]
    assert singletons == pytest.approx(plain, rel=1e-10)  # and plain DeLong reproduces pROC (other test)
    aucs, clustered = delong_covariance(y, np.vstack([a, b]), patients)
    draws = np.array([delong_covariance(y[i], np.vstack([a[i], b[i]]))[0]
                      for i in patient_resamples(patients, n_resamples=1500, seed=2)])
    assert np.sqrt(clustered[0, 0]) == pytest.approx(draws[:, 0].std(), rel=0.12)
    difference_se = np.sqrt(clustered[0, 0] + clustered[1, 1] - 2 * clustered[0, 1])
    assert difference_se == pytest.approx((draws[:, 0] - draws[:, 1]).std(), rel=0.12)
    assert clustered[0, 0] > 1.3 * plain[0, 0]  # independence understates the variance here
    test = delong_test(y, a, b, clusters=patients)
    assert test.z == pytest.approx((aucs[0] - aucs[1]) / difference_se)


def _cases(n: int, seed: int) -> tuple[ModelCases, np.ndarray, np.random.Generator]:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(size=n) < 0.5
    p = np.clip(0.5 + 0.3 * (truth - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    labels = np.asarray(CLASSES, dtype=object)
    cases = ModelCases("m" * 64, "mri-ehcc", CLASSES, np.array([f"S{i}" for i in range(n)], dtype=object),
                       np.array(["L1"] * n, dtype=object), np.array([f"P{i // 2}" for i in range(n)], dtype=object),
                       labels[truth.astype(int)], labels[(p >= 0.5).astype(int)], np.column_stack([1 - p, p]))
    return cases, truth, rng


def test_three_readers_of_auc_069_are_reported_as_069_not_as_a_consensus_reader() -> None:
    """The defect this replaces: three readers with AUC 0.69 each, averaged lesion by lesion, look
    like one reader with AUC ~0.8. The MRMC comparison reports the readers' own mean AUC."""
    cases, truth, rng = _cases(600, seed=1)
    reads: dict[tuple[str, str], list[Read]] = {}
    own_aucs, ratings = [], []
    for j in range(3):
        latent = 0.7 * truth + rng.normal(size=truth.size)
        call = latent > 0.35
        confidence = np.round(0.5 + 0.45 * (1 - np.exp(-np.abs(latent - 0.35))), 2)
        score = np.array([reader_scores(CLASSES[int(c)], float(q), CLASSES)[1] for c, q in zip(call, confidence,
                                                                                                 strict=True)])
        own_aucs.append(roc_auc_score(truth, score))
        ratings.append(score)
        for i in range(truth.size):
            reads.setdefault((f"S{i}", "L1"), []).append(Read(f"R{j}", "general", CLASSES[int(call[i])],
                                                              float(confidence[i])))
    assert np.mean(own_aucs) == pytest.approx(0.69, abs=0.03)
    consensus = roc_auc_score(truth, np.mean(ratings, axis=0))
    assert consensus > np.mean(own_aucs) + 0.04  # what the averaged "reader" would have claimed
    [group] = [e for e in compare_readers(cases, reads, BootstrapSettings(100)) if e["reader"] is None]
    assert group["metric"] == "auc"
    assert group["readers"] == pytest.approx(np.mean(own_aucs), abs=1e-12)
    assert list(group["per_reader"].values()) == pytest.approx(own_aucs, abs=1e-12)
    assert group["model"] == pytest.approx(roc_auc_score(truth, cases.scores[:, 1]))
    assert group["ci95"][0] < group["difference"] < group["ci95"][1] and group["df"] > 2


def test_hard_reads_are_compared_at_each_readers_operating_point() -> None:
    cases, truth, rng = _cases(400, seed=2)
    reads: dict[tuple[str, str], list[Read]] = {}
    calls = []
    for j in range(3):
        call = np.where(rng.uniform(size=truth.size) < 0.69, truth, ~truth)
        calls.append(call)
        for i in range(truth.size):
            reads.setdefault((f"S{i}", "L1"), []).append(Read(f"R{j}", "abdominal", CLASSES[int(call[i])], None))
    comparison = compare_readers(cases, reads, BootstrapSettings(200))
    by_metric = {e["metric"]: e for e in comparison if e["reader"] is None}
    assert set(by_metric) == {"sensitivity", "specificity"}
    sensitivity = [recall_score(truth, c) for c in calls]
    specificity = [recall_score(~truth, ~c) for c in calls]
    assert list(by_metric["sensitivity"]["per_reader"].values()) == pytest.approx(sensitivity)
    assert list(by_metric["specificity"]["per_reader"].values()) == pytest.approx(specificity)
    assert by_metric["sensitivity"]["readers"] == pytest.approx(0.69, abs=0.05)
    # The model's sensitivity at each reader's specificity, by brute force over its thresholds.
    score = cases.scores[:, 1]
    at_readers = []
    for spec in specificity:
        feasible = [t for t in np.r_[-np.inf, np.unique(score)] if np.mean(score[~truth] <= t) >= spec]
        at_readers.append(float(np.mean(score[truth] > min(feasible))))
    assert by_metric["sensitivity"]["model"] == pytest.approx(np.mean(at_readers))
    accuracy = [e for e in comparison if e["metric"] == "accuracy"]
    pvalues = [e["p_value"] for e in accuracy]
    assert [e["p_adjusted"] for e in accuracy] == pytest.approx(multipletests(pvalues, method="holm")[1])
    assert accuracy[0]["difference"] == pytest.approx(np.mean(cases.y_pred == cases.y_true)
                                                      - np.mean(calls[0] == truth))


def test_mid_p_mcnemar_against_statsmodels() -> None:
    model = np.array([1] * 30 + [1] * 12 + [0] * 4 + [0] * 10, dtype=bool)
    reader = np.array([1] * 30 + [0] * 12 + [1] * 4 + [0] * 10, dtype=bool)
    exact, mid = mid_p_mcnemar(model, reader)
    table = np.array([[30, 12], [4, 10]])
    assert exact == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert exact == pytest.approx(2 * binom.cdf(4, 16, 0.5))
    assert mid == pytest.approx(exact - binom.pmf(4, 16, 0.5)) and mid < exact
    assert mid_p_mcnemar(model, model) == (1.0, 1.0)
