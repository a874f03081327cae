"""Synthetic composites for model tests: a bright disc whose colour (phase pattern) is the class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: per-class (R, G, B) intensity of the lesion: arterial-bright, delayed-bright, pre-bright...
CLASS_COLOURS = [(0.95, 0.35, 0.30), (0.30, 0.90, 0.35), (0.35, 0.30, 0.95), (0.85, 0.85, 0.25)]


@dataclass
class SyntheticSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: list[str]
    patient_ids: list[str]
    masks: np.ndarray  # (N, H, W) bool, the lesion


def make_composites(*, classes: list[str], patients_per_class: int, lesions_per_patient: int = 2, size: int = 40,
                    seed: int = 0, noise: float = 0.08, patient_prefix: str = "P") -> SyntheticSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images, labels, patients, masks = [], [], [], []
    for c, label in enumerate(classes):
        colour = np.array(CLASS_COLOURS[c % len(CLASS_COLOURS)])
        for p in range(patients_per_class):
            patient = f"{patient_prefix}{c}-{p}"
            liver = rng.uniform(0.35, 0.5, size=3)  # the patient's own background enhancement
            for _ in range(lesions_per_patient):
                radius = rng.uniform(size * 0.15, size * 0.22)
                cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
                image = np.broadcast_to(liver, (size, size, 3)).copy()
                image[mask] = colour
                image += rng.normal(0, noise, size=image.shape)
                images.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
                labels.append(label)
                patients.append(patient)
                masks.append(mask)
    return SyntheticSet(np.stack(images), labels, patients, np.stack(masks))
