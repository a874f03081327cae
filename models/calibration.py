"""Prior-corrected calibration: honest per-class probabilities from a class-weighted network.

Why not one temperature: a network trained with inverse-frequency class weights learns the logits
of a world where every class is equally common, ``z_k = log p(k | x) + log w_k + const``. A single
temperature cannot undo that shift, so the rare classes come out several times too probable
(early HCC at a 3% prevalence got a mean probability of about 9%), and a top-label ECE does not
show it. The map used here is

    p = softmax((z - log w) / T + b)

``log w`` (the class weights the fit actually used) removes the known prior shift exactly; the
temperature ``T`` and the per-class bias ``b`` are then fitted by multinomial log-likelihood
(scipy's L-BFGS-B) with a standard-normal prior on each bias, which keeps a rare class's bias
near the already corrected value when the calibration set holds only a handful of its lesions.

Where it is fitted (see models/training.py): on a held-out patient-level split of the same fit it
is applied to (never on other models' logits), so the map belongs to its own network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from scipy.optimize import minimize
from sklearn.calibration import calibration_curve

MIN_LOG_T, MAX_LOG_T = -3.0, 4.0
BIAS_PRIOR_SD = 1.0
RELIABILITY_BINS = 10


def log_loss(y_true_index: np.ndarray, probabilities: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (lower is better)."""
    index = np.asarray(y_true_index, dtype=int)
    probs = np.clip(np.asarray(probabilities, dtype=np.float64)[np.arange(index.size), index], eps, 1.0)
    return float(-np.log(probs).mean())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def prior_shift(class_weights: np.ndarray) -> np.ndarray:
    """``log w`` for the classes that were weighted; 0 (no shift) for weights that are 0 (absent)."""
    weights = np.asarray(class_weights, dtype=np.float64)
    return np.where(weights > 0, np.log(np.where(weights > 0, weights, 1.0)), 0.0)


class CalibrationJson(TypedDict):
    """The fitted map's parameters as the manifest's ``calibration`` section stores them."""

    temperature: float
    bias: dict[str, float]
    prior_correction: dict[str, float]


@dataclass(frozen=True)
class CalibrationMap:
    """``softmax((z - log_weight) / temperature + bias)``; the identity map is T=1 and zeros."""

    temperature: float
    bias: np.ndarray
    log_weight: np.ndarray

    @classmethod
    def identity(cls, num_classes: int) -> CalibrationMap:
        return cls(1.0, np.zeros(num_classes), np.zeros(num_classes))

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated (N, K) probabilities of (N, K) logits."""
        shifted = (np.asarray(logits, dtype=np.float64) - self.log_weight) / self.temperature + self.bias
        return softmax(shifted)

    def to_json(self, classes: Sequence[str]) -> CalibrationJson:
        return {"temperature": float(self.temperature),
                "bias": {c: float(v) for c, v in zip(classes, self.bias, strict=True)},
                "prior_correction": {c: float(v) for c, v in zip(classes, self.log_weight, strict=True)}}

    @classmethod
    def from_manifest(cls, calibration: Mapping[str, object], classes: Sequence[str]) -> CalibrationMap:
        """The map of a manifest's ``calibration`` section; a section with only a temperature (older
        artifacts) or none at all still loads, as plain temperature scaling."""
        temperature = calibration.get("temperature", 1.0)
        bias, shift = calibration.get("bias"), calibration.get("prior_correction")

        def vector(values: object) -> np.ndarray:
            if not isinstance(values, Mapping):
                return np.zeros(len(classes))
            return np.array([float(values.get(c, 0.0)) for c in classes])

        return cls(float(temperature) if isinstance(temperature, (int, float)) else 1.0, vector(bias), vector(shift))


def _objective(params: np.ndarray, shifted: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log-posterior (sum NLL + Gaussian prior on the biases) and its gradient."""
    log_t, bias = params[0], params[1:]
    scaled = shifted * np.exp(-log_t)
    u = scaled + bias
    u = u - u.max(axis=1, keepdims=True)
    log_p = u - np.log(np.exp(u).sum(axis=1, keepdims=True))
    residual = np.exp(log_p) - onehot
    value = float(-(onehot * log_p).sum() + 0.5 * np.sum(bias**2) / BIAS_PRIOR_SD**2)
    gradient = np.concatenate([[-(residual * scaled).sum()], residual.sum(axis=0) + bias / BIAS_PRIOR_SD**2])
    return value, gradient


def fit_calibration(logits: np.ndarray, y_index: np.ndarray, *, class_weights: np.ndarray | None = None
                    ) -> CalibrationMap:
    """The prior-corrected temperature-and-bias map fitted on held-out ``logits`` (N, K).

    ``class_weights`` are the loss weights the network was trained with (None: unweighted).
    With no calibration data the map is the prior correction alone.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_index, dtype=int)
    if logits.ndim != 2 or logits.shape[0] != y.size:
        raise ValueError(f"logits (N, K) and N labels required, got {logits.shape} and {y.size}")
    k = logits.shape[1]
    shift = np.zeros(k) if class_weights is None else prior_shift(class_weights)
    if y.size == 0:
        return CalibrationMap(1.0, np.zeros(k), shift)
    onehot = np.eye(k)[y]
    result = minimize(_objective, np.zeros(k + 1), args=(logits - shift, onehot), jac=True, method="L-BFGS-B",
                      bounds=[(MIN_LOG_T, MAX_LOG_T)] + [(None, None)] * k)
    bias = result.x[1:] - result.x[1:].mean()  # softmax ignores a common offset; keep them centred
    return CalibrationMap(float(np.exp(result.x[0])), bias, shift)


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """Plain temperature scaling (one scalar, no prior correction): kept for comparison."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != len(y_index) or logits.shape[0] == 0:
        raise ValueError(f"logits (N, K) and N labels required, got {logits.shape} and {len(y_index)}")
    onehot = np.eye(logits.shape[1])[np.asarray(y_index, dtype=int)]

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = _objective(np.concatenate([params, np.zeros(logits.shape[1])]), logits, onehot)
        return value, gradient[:1]

    result = minimize(objective, np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(MIN_LOG_T, MAX_LOG_T)])
    return float(np.exp(result.x[0]))


# "class" is a keyword: the functional form.
ClassReliability = TypedDict("ClassReliability", {
    "class": str, "mean_predicted": float, "observed_rate": float, "ece": float, "n": int})


def per_class_reliability(y_index: np.ndarray, probabilities: np.ndarray, classes: Sequence[str], *,
                          n_bins: int = RELIABILITY_BINS) -> list[ClassReliability]:
    """Class-wise reliability (Kull et al. 2019): for each class, the mean predicted probability
    against the observed rate over all lesions, and the class-wise ECE: scikit-learn's
    ``calibration_curve`` (equal-width bins) of the one-vs-rest problem, each bin's gap weighted by
    its share of the lesions. ``n`` is the number of lesions of the class."""
    y = np.asarray(y_index, dtype=int)
    probs = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out: list[ClassReliability] = []
    for k, label in enumerate(classes):
        positive, p = (y == k).astype(int), np.clip(probs[:, k], 0.0, 1.0)
        observed, predicted = calibration_curve(positive, p, n_bins=n_bins, strategy="uniform", pos_label=1)
        counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)  # the same bins
        weights = counts[counts > 0] / max(1, y.size)
        out.append({"class": label, "mean_predicted": float(p.mean()), "observed_rate": float(positive.mean()),
                    "ece": float(np.sum(weights * np.abs(observed - predicted))), "n": int(positive.sum())})
    return out
