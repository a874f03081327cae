"""The model against the readers, done as a reader study is analysed.

Each reader group is compared with the model on the lesions every reader of the group read (a
fully crossed design), by multi-reader multi-case analysis (:mod:`models.evaluation.mrmc`):
readers and patients random, the covariance from a patient-level jackknife. The figure of merit is
the one-vs-rest AUC of each class when the group's reads carry a confidence (a rating), else the
sensitivity and the specificity at each reader's own operating point: the model's sensitivity at
the reader's specificity, and its specificity at the reader's sensitivity (a hard read has no ROC
curve to compare with a continuous score). A group of one reader cannot have random readers: its
AUC is compared by DeLong's test with Obuchowski's clustered variance (the two AUCs of the same
lesions, patients as clusters), its operating points by the patient-jackknife z test.

Each reader is also compared with the model on accuracy on the lesions that reader read: McNemar's
test (mid-p; the exact p from statsmodels less the point probability) and a patient-level paired
bootstrap interval of the difference (BCa where defined, else percentile). An abstention counts as
wrong, as in the model's accuracy.

Every entry says how its ``ci95`` was formed (``ci_method``): ``hillis_t`` (OR, Hillis df),
``normal`` (one reader: jackknife z), or the bootstrap's ``bca`` / ``percentile``; an entry of one
class carries ``n``, the lesions of that class among the compared ones.

p-values are Holm-adjusted within two families: the group comparisons (every class, metric and
group together) and the per-reader accuracy comparisons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NotRequired, TypedDict

import numpy as np
from scipy.stats import binom, rankdata
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from models.evaluation.bootstrap import paired_difference
from models.evaluation.delong import delong_covariance
from models.evaluation.mrmc import ModelVsReaders, model_vs_readers, single_test
from models.evaluation.summary import BootstrapSettings
from worker.evaluation.cases import ModelCases, Read, reader_scores


class Method(StrEnum):
    OR_HILLIS = "Obuchowski-Rockette, Hillis ddf, patient-jackknife covariance; readers and patients random"
    ONE_READER = "patient-jackknife z test; a single reader, so readers fixed"
    ONE_READER_AUC = "clustered DeLong z test (Obuchowski 1997, patients as clusters); one reader, so readers fixed"
    MCNEMAR = "McNemar mid-p (statsmodels exact binomial); 95% CI by patient-level paired bootstrap"


class CiMethod(StrEnum):
    """How a comparison's ``ci95`` was formed (``bca`` and ``percentile`` as the bootstrap's)."""

    HILLIS_T = "hillis_t"
    NORMAL = "normal"


class Metric(StrEnum):
    AUC = "auc"
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    ACCURACY = "accuracy"


# "class" is a keyword: the functional form.
ReaderComparison = TypedDict("ReaderComparison", {
    "reader_group": str,
    "reader": str | None,
    "class": str | None,
    "method": str,
    "metric": str,
    "model": "float | None",
    "readers": "float | None",
    "difference": "float | None",  # model - readers
    "ci95": "list[float | None]",
    "ci_method": str,
    "p_value": "float | None",
    "p_adjusted": "float | None",
    "family": str,
    "lesions": int,
    "patients": int,
    "per_reader": NotRequired["dict[str, float | None]"],
    "df": NotRequired["float | None"],
    "n": NotRequired[int],
})


@dataclass(frozen=True)
class GroupReads:
    """A group's fully crossed reads: rows of the cases, and each reader's read of each row."""

    group: str
    readers: list[str]
    rows: np.ndarray
    reads: list[list[Read]]  # [reader][row]

    @property
    def rated(self) -> bool:
        return all(read.confidence is not None for per_reader in self.reads for read in per_reader)


def crossed_reads(cases: ModelCases, reads: dict[tuple[str, str], list[Read]]) -> list[GroupReads]:
    """Per group, the lesions every reader of the group read (first read of each kept)."""
    index = {key: i for i, key in enumerate(cases.keys())}
    by_group: dict[str, dict[str, dict[int, Read]]] = {}
    for key, per_lesion in reads.items():
        if key not in index:
            continue
        for read in per_lesion:
            by_group.setdefault(read.reader_group, {}).setdefault(read.reader_id, {}).setdefault(index[key], read)
    out = []
    for group, by_reader in sorted(by_group.items()):
        readers = sorted(by_reader)
        common = sorted(set.intersection(*(set(rows) for rows in by_reader.values())))
        out.append(GroupReads(group, readers, np.asarray(common, dtype=np.int64),
                              [[by_reader[r][row] for row in common] for r in readers]))
    return out


def _at_specificity(score: np.ndarray, positive: np.ndarray, specificity: float) -> float:
    """The model's sensitivity at the lowest threshold whose specificity reaches ``specificity``."""
    negatives = np.sort(score[~positive])
    k = int(np.ceil(specificity * negatives.size - 1e-9))
    threshold = -np.inf if k == 0 else negatives[k - 1]
    return float(np.mean(score[positive] > threshold))


def _at_sensitivity(score: np.ndarray, positive: np.ndarray, sensitivity: float) -> float:
    """The model's specificity at the highest threshold whose sensitivity reaches ``sensitivity``."""
    positives = np.sort(score[positive])[::-1]
    k = int(np.ceil(sensitivity * positives.size - 1e-9))
    threshold = np.inf if k == 0 else positives[k - 1]
    return float(np.mean(score[~positive] < threshold))


def _fom(metric: Metric, positive: np.ndarray, model_score: np.ndarray, reader_values: np.ndarray
         ) -> Callable[[np.ndarray], np.ndarray]:
    """FOM(indices) -> [model matched to each reader..., each reader...] for :func:`model_vs_readers`.

    ``reader_values`` is readers x rows: a rating for AUC, a call of the class (0/1) otherwise.
    """
    readers = reader_values.shape[0]

    def fom(rows: np.ndarray) -> np.ndarray:
        p = positive[rows]
        if p.all() or not p.any():
            return np.full(2 * readers, np.nan)
        if metric is Metric.AUC:
            auc = _auc(p, model_score[rows])
            return np.concatenate([np.full(readers, auc), [_auc(p, v) for v in reader_values[:, rows]]])
        calls = reader_values[:, rows].astype(bool)
        sensitivity, specificity = calls[:, p].mean(axis=1), (~calls[:, ~p]).mean(axis=1)
        if metric is Metric.SENSITIVITY:
            model = [_at_specificity(model_score[rows], p, s) for s in specificity]
            return np.concatenate([model, sensitivity])
        model = [_at_sensitivity(model_score[rows], p, s) for s in sensitivity]
        return np.concatenate([model, specificity])
    return fom


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC with mid-ranks (ties count half), as DeLong and scikit-learn define it."""
    n_pos = int(positive.sum())
    return float((rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (positive.size - n_pos)))


def _clean(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _method(metric: Metric, outcome: ModelVsReaders) -> Method:
    if outcome.random_readers:
        return Method.OR_HILLIS
    return Method.ONE_READER_AUC if metric is Metric.AUC else Method.ONE_READER


def _group_entry(group: GroupReads, label: str, metric: Metric, outcome: ModelVsReaders,
                 patients: np.ndarray, positives: int) -> ReaderComparison:
    result = outcome.result
    random_readers = outcome.random_readers
    return {"reader_group": group.group, "reader": None, "class": label, "method": _method(metric, outcome).value,
            "metric": metric.value, "model": _clean(outcome.model), "readers": _clean(outcome.readers),
            "difference": _clean(result.estimate), "ci95": [_clean(result.low), _clean(result.high)],
            "ci_method": (CiMethod.HILLIS_T if random_readers else CiMethod.NORMAL).value,
            "p_value": _clean(result.p_value), "p_adjusted": None, "family": "reader groups",
            "lesions": int(group.rows.size), "patients": int(len(set(patients.tolist()))),
            "per_reader": {r: _clean(v) for r, v in zip(group.readers, outcome.per_reader, strict=True)},
            "df": _clean(result.df), "n": positives}


def _group_entries(cases: ModelCases, group: GroupReads, confidence: float) -> list[ReaderComparison]:
    classes = cases.classes
    rows = group.rows
    patients = cases.patient_ids[rows]
    out = []
    for label in [classes[1]] if len(classes) == 2 else classes:
        c = classes.index(label)
        positive = cases.y_true[rows] == label
        if positive.all() or not positive.any():
            continue
        if group.rated:
            values = np.array([[reader_scores(r.label, r.confidence, classes)[c] for r in per_reader]
                               for per_reader in group.reads])
            metrics = [Metric.AUC]
        else:
            values = np.array([[r.label == label for r in per_reader] for per_reader in group.reads], dtype=float)
            metrics = [Metric.SENSITIVITY, Metric.SPECIFICITY]
        for metric in metrics:
            if metric is Metric.AUC and len(group.readers) == 1:
                outcome = _one_reader_delong(positive, cases.scores[rows, c], values[0], patients, confidence)
            else:
                outcome = model_vs_readers(_fom(metric, positive, cases.scores[rows, c], values), patients,
                                           len(group.readers), confidence=confidence)
            out.append(_group_entry(group, label, metric, outcome, patients, int(positive.sum())))
    return out


def _one_reader_delong(positive: np.ndarray, model_score: np.ndarray, reader_score: np.ndarray,
                       patients: np.ndarray, confidence: float) -> ModelVsReaders:
    """Model AUC minus the one reader's AUC on the same lesions, by DeLong's test with the
    variance clustered by patient (:func:`models.evaluation.delong.delong_covariance`); the normal
    interval of the difference (readers fixed)."""
    aucs, covariance = delong_covariance(positive, np.vstack([model_score, reader_score]), patients)
    variance = covariance[0, 0] + covariance[1, 1] - 2.0 * covariance[0, 1]
    result = single_test(np.array([aucs[0] - aucs[1]]), np.array([[variance]]), confidence=confidence)
    return ModelVsReaders(float(aucs[0]), float(aucs[1]), (float(aucs[1]),), result)


def mid_p_mcnemar(model_right: np.ndarray, reader_right: np.ndarray) -> tuple[float, float]:
    """(exact p, mid-p) of McNemar's test on the discordant pairs (Fagerland et al., BMC Med Res
    Methodol 2013;13:91): mid-p = exact p - P(X = min(b, c)) under Binomial(b + c, 1/2)."""
    b = int(np.sum(model_right & ~reader_right))
    c = int(np.sum(~model_right & reader_right))
    table = np.array([[int(np.sum(model_right & reader_right)), b], [c, int(np.sum(~model_right & ~reader_right))]])
    exact = float(mcnemar(table, exact=True).pvalue)
    if b + c == 0:
        return exact, 1.0
    low = min(b, c)
    return exact, float(min(1.0, 2 * binom.cdf(low, b + c, 0.5) - binom.pmf(low, b + c, 0.5)))


def _mean_of(hits: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda rows: float(hits[rows].mean())


def _reader_entries(cases: ModelCases, reads: dict[tuple[str, str], list[Read]],
                    settings: BootstrapSettings) -> list[ReaderComparison]:
    index = {key: i for i, key in enumerate(cases.keys())}
    own: dict[tuple[str, str], dict[int, Read]] = {}
    for key, per_lesion in reads.items():
        for read in per_lesion if key in index else []:
            own.setdefault((read.reader_group, read.reader_id), {}).setdefault(index[key], read)
    out: list[ReaderComparison] = []
    model_hits = cases.y_pred == cases.y_true
    for (group, reader), by_row in sorted(own.items()):
        rows = np.asarray(sorted(by_row), dtype=np.int64)
        reader_hits = np.array([by_row[r].label == cases.y_true[r] for r in rows])
        model_right = model_hits[rows]
        _, p_mid = mid_p_mcnemar(model_right, reader_hits)
        test = paired_difference(_mean_of(model_right), _mean_of(reader_hits), cases.patient_ids[rows],
                                 n_resamples=settings.n_resamples, confidence=settings.confidence, seed=settings.seed)
        out.append({"reader_group": group, "reader": reader, "class": None, "method": Method.MCNEMAR.value,
                    "metric": Metric.ACCURACY.value, "model": float(model_right.mean()),
                    "readers": float(reader_hits.mean()), "difference": _clean(test.difference.estimate),
                    "ci95": [_clean(test.difference.low), _clean(test.difference.high)],
                    "ci_method": test.difference.method, "p_value": p_mid,
                    "p_adjusted": None, "family": "readers", "lesions": int(rows.size),
                    "patients": int(len(set(cases.patient_ids[rows].tolist())))})
    return out


def holm(entries: Sequence[ReaderComparison]) -> None:
    """Fill ``p_adjusted`` by Holm's step-down method within each family (statsmodels)."""
    for family in {e["family"] for e in entries}:
        members = [e for e in entries if e["family"] == family and e["p_value"] is not None]
        if not members:
            continue
        adjusted = multipletests([float(e["p_value"] or 0.0) for e in members], method="holm")[1]
        for entry, value in zip(members, adjusted, strict=True):
            entry["p_adjusted"] = float(value)


def compare_readers(cases: ModelCases, reads: dict[tuple[str, str], list[Read]],
                    settings: BootstrapSettings) -> list[ReaderComparison]:
    """Every comparison of the model with the readers, Holm-adjusted (see the module docstring)."""
    entries: list[ReaderComparison] = []
    for group in crossed_reads(cases, reads):
        if group.rows.size:
            entries.extend(_group_entries(cases, group, settings.confidence))
    entries.extend(_reader_entries(cases, reads, settings))
    holm(entries)
    return entries
