"""Batch prediction from an artifact: deterministic, calibrated, with abstention, TTA and heatmaps.

The same preprocessing as training (recorded in the manifest), eval mode and no randomness: the same
composite gives the same probabilities every time. Probabilities are calibrated (the network's own
prior-corrected temperature-and-bias map, or plain temperature for artifacts that recorded only
that; Platt for the SVM); below the abstention threshold, chosen at training for a target coverage
(models/abstention.py), the label is ``indeterminate``, which the SR reports as such instead of a
guess.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.abstention import INDETERMINATE
from models.architectures import build_model, extract_features
from models.artifact import SVM, WEIGHTS, Artifact
from models.calibration import CalibrationMap
from models.device import autocast, memory_format, resolve_device
from models.explain import grad_cam, occlusion_map
from models.registry import Registry
from models.svm import FittedSvm, svm_probabilities
from models.transforms import Preprocessing, to_input_tensor, tta_thetas, warp

__all__ = ["INDETERMINATE", "Classifier", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    label: str  # a class, or "indeterminate"
    top_class: str
    probabilities: dict[str, float]
    heatmap: np.ndarray | None = field(default=None, repr=False)

    @property
    def indeterminate(self) -> bool:
        return self.label == INDETERMINATE


class Classifier:
    """A loaded artifact, ready to classify composites on one device."""

    def __init__(self, artifact: Artifact, *, registry: Registry, device: str = "auto",
                 mixed_precision: bool = False, channels_last: bool = True) -> None:
        manifest = artifact.manifest
        self.artifact = artifact
        self.classes: list[str] = list(manifest["classes"])
        self.spec = registry.get(manifest["architecture"])
        self.preprocessing = Preprocessing.from_dict(manifest["input"]["preprocessing"])
        self.calibration = CalibrationMap.from_manifest(manifest.get("calibration") or {}, self.classes)
        self.abstention_threshold = float(manifest.get("abstention_threshold", 0.0))
        self.device = resolve_device(device)
        # bf16 changes the last digits of the probabilities; off by default so that results are
        # identical to the CPU's up to float32 rounding. Benchmarks turn it on.
        self.mixed_precision, self.channels_last = mixed_precision, channels_last
        self.model = build_model(self.spec, len(self.classes))
        state = torch.load(artifact.path / WEIGHTS, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state)
        self.model.to(self.device).to(memory_format=memory_format(self.device, channels_last)).eval()
        self.svm: FittedSvm | None = None
        if manifest["mode"] == "svm":  # unpickled only after the artifact's hash was verified
            self.svm = pickle.loads((artifact.path / SVM).read_bytes())

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device).contiguous(memory_format=memory_format(self.device, self.channels_last))

    def probabilities_of(self, inputs: torch.Tensor) -> np.ndarray:
        """Calibrated (N, K) probabilities of a normalised batch."""
        with torch.inference_mode(), autocast(self.device, self.mixed_precision):
            batch = self._prepare(inputs)
            if self.svm is not None:
                features = extract_features(self.model, self.spec, batch).float().cpu().numpy()
                return svm_probabilities(self.svm, features.astype(np.float64), len(self.classes))
            logits = self.model(batch).float().cpu().numpy().astype(np.float64)
        return self.calibration.apply(logits)

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    def _tta_probabilities(self, inputs: torch.Tensor) -> np.ndarray:
        views = [self.probabilities_of(warp(inputs, theta)) for theta in tta_thetas(inputs.shape[0])]
        mean: np.ndarray = np.mean(views, axis=0)
        return mean

    def predict(self, images: Sequence[np.ndarray] | np.ndarray, *, tta: bool = False,
                abstain_below: float | None = None, explain: bool = False, batch_size: int = 32) -> list[Prediction]:
        """One :class:`Prediction` per composite (HxWx3 uint8 or float 0-1)."""
        threshold = self.abstention_threshold if abstain_below is None else abstain_below
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = list(images[start:start + batch_size])
            inputs = to_input_tensor(chunk, self.preprocessing)
            probs = self._tta_probabilities(inputs) if tta else self.probabilities_of(inputs)
            top = probs.argmax(axis=1)
            heatmaps: list[np.ndarray | None] = [None] * len(chunk)
            if explain:
                heatmaps = self.heatmaps(inputs, top.tolist(), [np.asarray(c).shape[:2] for c in chunk])
            for row, index in enumerate(top):
                label = self.classes[index] if probs[row, index] >= threshold else INDETERMINATE
                out.append(Prediction(label, self.classes[index],
                                      {c: float(p) for c, p in zip(self.classes, probs[row], strict=True)},
                                      heatmaps[row]))
        return out

    def heatmaps(self, inputs: torch.Tensor, class_index: list[int],
                 shapes: list[tuple[int, int]]) -> list[np.ndarray | None]:
        if self.svm is not None:
            return [occlusion_map(self.probabilities_of, inputs[i:i + 1], class_index[i], shapes[i])
                    for i in range(len(class_index))]
        return list(grad_cam(self.model, self.spec, self._prepare(inputs), class_index, shapes))
