"""Temperature scaling: one scalar that makes a network's softmax probabilities honest.

Fitted on the out-of-fold logits of cross-validation (data the network's weights never saw), then
applied to the final model; a single parameter cannot overfit a few hundred lesions and never changes
which class is predicted, only how confident the probabilities are. The abstention threshold acts on
these calibrated probabilities.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

MIN_LOG_T, MAX_LOG_T = -3.0, 4.0


def log_loss(y_true_index: np.ndarray, probabilities: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (lower is better): what the temperature minimises."""
    index = np.asarray(y_true_index, dtype=int)
    probs = np.clip(np.asarray(probabilities, dtype=np.float64)[np.arange(index.size), index], eps, 1.0)
    return float(-np.log(probs).mean())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    probabilities: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probabilities


def fit_temperature(logits: np.ndarray, y_index: np.ndarray) -> float:
    """The temperature T > 0 that minimises the log-loss of ``softmax(logits / T)``."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] != len(y_index) or logits.shape[0] == 0:
        raise ValueError(f"logits (N, K) and N labels required, got {logits.shape} and {len(y_index)}")
    result = minimize_scalar(lambda log_t: log_loss(y_index, softmax(logits, float(np.exp(log_t)))),
                             bounds=(MIN_LOG_T, MAX_LOG_T), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def apply_abstention(probabilities: np.ndarray, classes: list[str], threshold: float,
                     indeterminate: str = "indeterminate") -> list[str]:
    """The top class, or ``indeterminate`` where its probability is below ``threshold``."""
    top = probabilities.argmax(axis=1)
    return [classes[i] if probabilities[row, i] >= threshold else indeterminate for row, i in enumerate(top)]
