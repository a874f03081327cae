"""Multi-reader multi-case (MRMC) analysis: Obuchowski-Rockette with Hillis' degrees of freedom.

Why this exists: a reader study is a sample of readers *and* of cases, so the readers' figure of
merit (AUC, sensitivity, ...) is an average over readers that are themselves random. Averaging the
readers' scores lesion by lesion and testing that average invents a consensus reader who does not
exist (three readers of AUC 0.69 average into a "reader" of AUC 0.83). The Obuchowski-Rockette
(OR) model instead takes each reader's own figure of merit and models its error with a
reader-by-case covariance estimated from the cases (DeLong or jackknife), and Hillis' denominator
degrees of freedom make the F test valid for few readers.

- Obuchowski NA, Rockette HE. Hypothesis testing of diagnostic accuracy for multiple readers and
  multiple tests: an ANOVA approach with dependent observations. Commun Stat Simul 1995;24:285-308.
- Hillis SL. A comparison of denominator degrees of freedom methods for multiple observer ROC
  analysis. Stat Med 2007;26:596-619 (and Hillis et al., Acad Radiol 2005;12:1534, eq. 23 for a
  single test, used here for a standalone model against each reader).

The model against readers is the single-test analysis of the differences ``D_j = FOM(model) -
FOM(reader j)`` on the same cases (the "1T-RRRC" analysis of RJafroc's CAD-vs-radiologists
comparison): readers and cases random, the model fixed. Cases are resampled as clusters (all of a
patient's lesions leave the jackknife together), so lesions of one patient are not taken as
independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import f as f_distribution
from scipy.stats import norm
from scipy.stats import t as t_distribution

from models.evaluation.bootstrap import patient_jackknife

Fom = Callable[[np.ndarray], np.ndarray]
"""Figures of merit of every (treatment, reader) cell computed on the cases at these indices."""


def jackknife_covariance(fom: Fom, clusters: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fom`` on all cases and the jackknife covariance of its values, leaving out one cluster
    (patient) at a time: ``(G - 1) / G * sum (theta_-g - mean)(theta_-g - mean)'``.

    With one case per cluster this is the case jackknife of the OR literature (MRMCaov, RJafroc).
    """
    estimate = np.asarray(fom(np.arange(len(clusters))), dtype=np.float64)
    pseudo = np.array([np.asarray(fom(rows), dtype=np.float64).reshape(estimate.size)
                       for rows in patient_jackknife(clusters)])
    centred = pseudo - pseudo.mean(axis=0)
    count = pseudo.shape[0]
    covariance = (count - 1) / count * centred.T @ centred
    return estimate, covariance


@dataclass(frozen=True)
class VarianceComponents:
    """The OR error covariances: ``var`` of one cell, ``cov1`` same reader / other test, ``cov2``
    same test / other reader, ``cov3`` other test and other reader."""

    var: float
    cov1: float
    cov2: float
    cov3: float


def variance_components(covariance: np.ndarray, tests: int, readers: int) -> VarianceComponents:
    """Averages of the covariance entries by kind; cells are indexed ``test * readers + reader``."""
    test = np.repeat(np.arange(tests), readers)
    reader = np.tile(np.arange(readers), tests)
    same_test, same_reader = test[:, None] == test[None, :], reader[:, None] == reader[None, :]

    def mean(mask: np.ndarray) -> float:
        return float(covariance[mask].mean()) if mask.any() else float("nan")

    return VarianceComponents(var=mean(same_test & same_reader), cov1=mean(~same_test & same_reader),
                              cov2=mean(same_test & ~same_reader), cov3=mean(~same_test & ~same_reader))


@dataclass(frozen=True)
class ORResult:
    """A difference (or, for one test, a mean) with its Hillis t interval and test."""

    estimate: float
    std_error: float
    df: float
    statistic: float  # F for several tests, t for one test or a pair
    p_value: float
    low: float
    high: float
    components: VarianceComponents


def _t_result(estimate: float, variance: float, df: float, null: float, components: VarianceComponents,
              confidence: float) -> ORResult:
    if not variance > 0:
        p = 1.0 if estimate == null else float("nan")
        return ORResult(estimate, 0.0, df, float("nan"), p, estimate, estimate, components)
    se = float(np.sqrt(variance))
    t = (estimate - null) / se
    quantile = float(norm.ppf(0.5 + confidence / 2) if np.isinf(df) else t_distribution.ppf(0.5 + confidence / 2, df))
    p = float(2 * (norm.sf(abs(t)) if np.isinf(df) else t_distribution.sf(abs(t), df)))
    return ORResult(estimate, se, df, t, p, estimate - quantile * se, estimate + quantile * se, components)


def obuchowski_rockette(foms: np.ndarray, covariance: np.ndarray, *, confidence: float = 0.95) -> ORResult:
    """Random readers and cases, tests (rows of ``foms``, tests x readers) compared.

    F = MS(T) / (MS(TR) + J max(Cov2 - Cov3, 0)) on (I - 1, ddf_H) degrees of freedom, ddf_H =
    [MS(TR) + J max(Cov2 - Cov3, 0)]^2 / {MS(TR)^2 / [(I - 1)(J - 1)]}. The estimate and interval
    are those of test 0 minus test 1 (the first pair when there are more).
    """
    foms = np.asarray(foms, dtype=np.float64)
    tests, readers = foms.shape
    if tests < 2 or readers < 2:
        raise ValueError(f"OR needs at least 2 tests and 2 readers, got {foms.shape}")
    components = variance_components(covariance, tests, readers)
    test_means, reader_means, grand = foms.mean(axis=1), foms.mean(axis=0), foms.mean()
    ms_t = readers * float(((test_means - grand) ** 2).sum()) / (tests - 1)
    interaction = foms - test_means[:, None] - reader_means[None, :] + grand
    ms_tr = float((interaction ** 2).sum()) / ((tests - 1) * (readers - 1))
    denominator = ms_tr + readers * max(components.cov2 - components.cov3, 0.0)
    ddf = denominator ** 2 / (ms_tr ** 2 / ((tests - 1) * (readers - 1))) if ms_tr > 0 else float("inf")
    pair = _t_result(float(test_means[0] - test_means[1]), 2.0 / readers * denominator, ddf, 0.0, components,
                     confidence)
    if tests == 2 or not denominator > 0:
        return pair
    statistic = ms_t / denominator
    p = float(f_distribution.sf(statistic, tests - 1, ddf))
    return ORResult(pair.estimate, pair.std_error, ddf, statistic, p, pair.low, pair.high, components)


def single_test(foms: np.ndarray, covariance: np.ndarray, *, null: float = 0.0,
                confidence: float = 0.95) -> ORResult:
    """One test read by J random readers: the reader-averaged FOM against ``null`` (Hillis 2005,
    eq. 23): SE^2 = [MS(R) + J max(Cov2, 0)] / J, df = [MS(R) + J max(Cov2, 0)]^2 / [MS(R)^2 / (J - 1)].

    With a single reader the readers cannot be random: the interval is then the normal one on the
    case variance alone (readers fixed), which the caller must say.
    """
    foms = np.asarray(foms, dtype=np.float64)
    readers = foms.size
    components = variance_components(np.atleast_2d(covariance), 1, readers)
    mean = float(foms.mean())
    if readers == 1:
        return _t_result(mean, components.var, float("inf"), null, components, confidence)
    ms_r = float(((foms - mean) ** 2).sum()) / (readers - 1)
    numerator = ms_r + readers * max(components.cov2, 0.0)
    df = numerator ** 2 / (ms_r ** 2 / (readers - 1)) if ms_r > 0 else float("inf")
    return _t_result(mean, numerator / readers, df, null, components, confidence)


@dataclass(frozen=True)
class ModelVsReaders:
    """The model against one group of readers on the same cases."""

    model: float  # the model's FOM (averaged over readers when it depends on the reader)
    readers: float  # the readers' averaged FOM
    per_reader: tuple[float, ...]
    result: ORResult  # of model - readers

    @property
    def random_readers(self) -> bool:
        return len(self.per_reader) > 1


def model_vs_readers(fom: Fom, clusters: Sequence[str] | np.ndarray, readers: int, *,
                     confidence: float = 0.95) -> ModelVsReaders:
    """``fom(indices)`` returns ``2 * readers`` values: the model's FOM matched to each reader (the
    same value repeated for a threshold-free FOM such as AUC) and then each reader's FOM. The
    differences model - reader are analysed as one test with random readers (:func:`single_test`)
    under the cluster-jackknife covariance."""
    estimate, covariance = jackknife_covariance(fom, clusters)
    if estimate.size != 2 * readers:
        raise ValueError(f"fom must return {2 * readers} values, got {estimate.size}")
    contrast = np.hstack([np.eye(readers), -np.eye(readers)])
    differences = contrast @ estimate
    result = single_test(differences, contrast @ covariance @ contrast.T, confidence=confidence)
    return ModelVsReaders(float(estimate[:readers].mean()), float(estimate[readers:].mean()),
                          tuple(float(v) for v in estimate[readers:]), result)
