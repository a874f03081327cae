"""Three acquisitions -> one RGB composite, exactly the same for training and for inference.

The papers put three phases (or sequences) of the same anatomy into the R, G and B channels
(CT: arterial -> red, delayed -> green, pre-contrast -> blue). Each role is windowed to [0, 1]
(CT: a fixed Hounsfield window; MRI: robust percentiles, since MR signal has no absolute scale),
the lesion is cropped with a margin, the crop is resized to the network's input size, and the
result is both an 8-bit picture a person can look at and the float array the network sees.
The recipe (roles, windows, margin) travels with the model, so inference reproduces training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.ndimage import zoom

from models.tasks import KNOWN_TASKS

#: The statistics torchvision's ImageNet weights were trained with; the network sees composites
#: normalised by them (here for the numpy path, in :mod:`models.transforms` for the batched one).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Window:
    """A fixed intensity window (CT, in HU) or, with ``percentiles``, a robust per-image scaling."""

    centre: float = 60.0
    width: float = 400.0
    percentiles: tuple[float, float] | None = None

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.percentiles is not None:
            low, high = np.percentile(values, self.percentiles)
        else:
            low, high = self.centre - self.width / 2, self.centre + self.width / 2
        if high <= low:
            return np.zeros_like(values, dtype=np.float32)
        unit: np.ndarray = np.clip((values - low) / (high - low), 0.0, 1.0).astype(np.float32)
        return unit


CT_LIVER = Window(centre=60.0, width=400.0)
MR_ROBUST = Window(percentiles=(1.0, 99.0))


@dataclass(frozen=True)
class ChannelRecipe:
    """Which role goes to R, G and B, how each is windowed, and how the lesion is cut out."""

    channels: tuple[str, str, str]
    windows: Mapping[str, Window] = field(default_factory=dict)
    margin: float = 0.5  # crop = lesion box enlarged by this fraction on each side
    min_crop_mm: float = 30.0  # small lesions still get some context

    def window_for(self, role: str, modality: str) -> Window:
        return self.windows.get(role) or (CT_LIVER if modality == "CT" else MR_ROBUST)

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["windows"] = {k: asdict(v) for k, v in self.windows.items()}
        return data


DEFAULT_RECIPES = {task.name: ChannelRecipe(channels=task.channel_recipe) for task in KNOWN_TASKS}


@dataclass(frozen=True)
class Composite:
    rgb: np.ndarray  # (H, W, 3) uint8, for people and PNG files
    tensor: np.ndarray  # (3, H, W) float32, ImageNet-normalised as models.transforms does, for the network


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of an (H, W) array to (size, size)."""
    factors = (size / image.shape[0], size / image.shape[1])
    out: np.ndarray = zoom(image, factors, order=1, mode="nearest", grid_mode=True)
    return out[:size, :size]


def crop_box(shape: tuple[int, int], centre_rc: tuple[float, float], half_rc: tuple[float, float]
             ) -> tuple[slice, slice]:
    """A square-ish crop around a point, kept inside the image."""
    out = []
    for axis in range(2):
        half = max(int(np.ceil(half_rc[axis])), 2)
        low = int(round(centre_rc[axis])) - half
        high = int(round(centre_rc[axis])) + half
        shift = max(0, -low) - max(0, high - shape[axis])
        out.append(slice(max(low + shift, 0), min(high + shift, shape[axis])))
    return out[0], out[1]


def make_composite(channels: Mapping[str, np.ndarray], recipe: ChannelRecipe, *, modality: str,
                   size: int, crop: tuple[slice, slice] | None = None) -> Composite:
    """Window each role, stack per recipe (R, G, B), crop, resize: the network's input."""
    missing = [role for role in recipe.channels if role not in channels]
    if missing:
        raise KeyError(f"composite needs role(s) {', '.join(missing)}")
    planes = []
    for role in recipe.channels:
        # Window the whole plane first: robust MR percentiles need more than the lesion's crop.
        plane = recipe.window_for(role, modality).apply(np.asarray(channels[role], dtype=np.float32))
        if crop is not None:
            plane = plane[crop]
        planes.append(resize(plane, size))
    stacked = np.stack(planes, axis=-1)
    rgb = np.clip(np.round(stacked * 255.0), 0, 255).astype(np.uint8)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(IMAGENET_STD, dtype=np.float32)[:, None, None]
    tensor = (np.transpose(rgb.astype(np.float32) / 255.0, (2, 0, 1)) - mean) / std
    return Composite(rgb, tensor.astype(np.float32))
