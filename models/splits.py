"""Patient-level splits: no patient's lesions on both sides of any split.

Lesions of one patient share anatomy, scanner and contrast timing; letting them straddle a split
inflates every metric, so folds are drawn over patients (stratified by label as far as grouping
allows), and every split is checked for overlap before it is used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def _check_disjoint(groups: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    shared = set(groups[first].tolist()) & set(groups[second].tolist())
    if shared:
        raise AssertionError(f"patients on both sides of a split: {sorted(shared)[:3]}")


def patient_folds(labels: Sequence[str] | np.ndarray, patient_ids: Sequence[str] | np.ndarray, *, folds: int,
                  seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train_index, test_index) pairs, stratified by label, grouped by patient."""
    y, groups = np.asarray(labels), np.asarray(patient_ids)
    n_patients = len(set(groups.tolist()))
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if n_patients < folds:
        raise ValueError(f"{n_patients} patients cannot fill {folds} patient-level folds")
    largest_class_patients = max(len(set(groups[y == label].tolist())) for label in set(y.tolist()))
    if largest_class_patients < folds:
        raise ValueError(f"{folds} folds need at least {folds} patients in some class; "
                         f"the largest class has {largest_class_patients}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out = []
    for train, test in splitter.split(np.zeros(len(y)), y, groups):
        _check_disjoint(groups, train, test)
        out.append((np.sort(train), np.sort(test)))
    return out


def validation_split(labels: np.ndarray, patient_ids: np.ndarray, *, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One (fit, validation) split over patients, about ``fraction`` of them for validation."""
    y, groups = np.asarray(labels), np.asarray(patient_ids)
    largest_class_patients = max(len(set(groups[y == label].tolist())) for label in set(y.tolist()))
    if largest_class_patients < 2:
        raise ValueError("early stopping needs at least two patients in some class")
    n_splits = min(max(2, round(1.0 / fraction)), largest_class_patients)
    return patient_folds(y, groups, folds=n_splits, seed=seed)[0]


def inner_splits(labels: np.ndarray, patient_ids: np.ndarray, *, max_folds: int,
                 seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Splits for inner cross-validation (hyperparameters, calibration), as many as the smallest
    class allows (at least 2)."""
    y, groups = np.asarray(labels), np.asarray(patient_ids)
    patients = [len(set(groups[y == label].tolist())) for label in set(y.tolist())]
    folds = max(2, min(max_folds, min(patients)))
    return patient_folds(labels, patient_ids, folds=folds, seed=seed)
