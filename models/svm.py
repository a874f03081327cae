"""CNN features + SVM (the papers' VGG-16 FC7 + SVM), with inner-CV hyperparameters and calibration.

The backbone is fixed, so features are computed once per image; the SVM's C, kernel and gamma are
chosen by patient-level inner cross-validation on macro-F1 (robust to the class imbalance), and
Platt scaling fitted on inner folds turns decision values into probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from models.splits import inner_splits


class FittedSvm(Protocol):
    """What the rest of models/ uses of the fitted, calibrated SVM (and what ``svm.pkl`` holds)."""

    best_params_: dict[str, object]
    inner_cv_macro_f1_: float
    classes_: np.ndarray

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


def svm_grid(c_values: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0)) -> list[dict[str, list[str] | list[float]]]:
    return [{"svc__kernel": ["linear"], "svc__C": list(c_values)},
            {"svc__kernel": ["rbf"], "svc__C": list(c_values), "svc__gamma": ["scale"]}]


def fit_svm(features: np.ndarray, y_index: np.ndarray, patient_ids: np.ndarray, *, seed: int,
            inner_folds: int = 3, c_values: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0)) -> FittedSvm:
    """A fitted ``CalibratedClassifierCV`` around the best ``StandardScaler + SVC`` pipeline.

    Its ``best_params_`` attribute (added here) records the inner-CV choice for the manifest.
    """
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("svc", SVC(class_weight="balanced", random_state=seed))])
    splits = inner_splits(y_index, patient_ids, max_folds=inner_folds, seed=seed)
    search = GridSearchCV(pipeline, svm_grid(c_values), scoring="f1_macro", cv=splits, n_jobs=1,
                          error_score="raise")
    search.fit(features, y_index)
    calibration_splits = inner_splits(y_index, patient_ids, max_folds=inner_folds, seed=seed + 1)
    calibrated = CalibratedClassifierCV(search.best_estimator_, method="sigmoid", cv=calibration_splits)
    calibrated.fit(features, y_index)
    calibrated.best_params_ = {k.removeprefix("svc__"): v for k, v in search.best_params_.items()}
    calibrated.inner_cv_macro_f1_ = float(search.best_score_)
    fitted: FittedSvm = calibrated
    return fitted


def svm_probabilities(model: FittedSvm, features: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, num_classes) probabilities, with zero columns for classes the SVM never saw."""
    probs = model.predict_proba(features)
    out = np.zeros((features.shape[0], num_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = probs
    return out
