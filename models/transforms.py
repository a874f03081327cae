"""From composite arrays to network input, and the geometric transforms the papers use.

Windowing and channel stacking happen before models/ (the caller builds the composite and records
its recipe); here an HxWx3 composite (uint8, or float in [0, 1]) is resized to the architecture's
input size and normalised with ImageNet statistics, which is what the pretrained weights expect.

Augmentation (flip, rotation, shift, zoom, skew) runs as one batched ``grid_sample`` on the device
that trains, so a GPU is not starved by per-image CPU work. :func:`misregister` moves one channel
against the others, as the papers did to test whether registration matters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch.nn import functional

from models.compositing import IMAGENET_MEAN, IMAGENET_STD


class PreprocessingJson(TypedDict):
    """The manifest's ``input.preprocessing`` section."""

    input_size: int
    mean: list[float]
    std: list[float]
    resize: str
    input_range: str


class AugmentationJson(TypedDict):
    """``training.config.augmentation`` in the manifest."""

    hflip_p: float
    vflip_p: float
    rotation_deg: float
    shift_frac: float
    zoom: list[float]
    skew_deg: float
    enabled: bool


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    first, second, third = values
    return first, second, third


@dataclass(frozen=True)
class Preprocessing:
    """How a composite becomes the network's input; recorded in the manifest."""

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "bilinear, antialiased, to input_size x input_size"
    input_range: str = "uint8 0-255 scaled to 0-1, or float 0-1 (clipped)"

    def to_dict(self) -> PreprocessingJson:
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize, "input_range": self.input_range}

    @classmethod
    def from_dict(cls, data: PreprocessingJson) -> Preprocessing:
        return cls(input_size=int(data["input_size"]), mean=_triple(data["mean"]), std=_triple(data["std"]),
                   resize=data["resize"], input_range=data["input_range"])


def as_unit_float(image: np.ndarray) -> np.ndarray:
    """HxWx3 composite as float32 in [0, 1]; refuses shapes and dtypes that are not composites."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a composite is HxWx3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("composite holds NaN or infinite values")
        clipped: np.ndarray = np.clip(image, 0.0, 1.0).astype(np.float32)
        return clipped
    raise ValueError(f"a composite is uint8 or float in [0, 1], got {image.dtype}")


def to_input_tensor(images: Sequence[np.ndarray] | np.ndarray, preprocessing: Preprocessing,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """A normalised (N, 3, S, S) float32 batch; images may differ in size."""
    size = preprocessing.input_size
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    out = []
    for image in images:
        tensor = torch.from_numpy(as_unit_float(np.asarray(image))).permute(2, 0, 1)[None].to(device)
        if tensor.shape[-2:] != (size, size):
            tensor = functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True)
        out.append(tensor)
    if not out:
        raise ValueError("no images")
    return (torch.cat(out) - mean) / std


@dataclass(frozen=True)
class Augmentation:
    """Random geometric augmentation, as in the papers (flip, rotation, shift, zoom, skew)."""

    hflip_p: float = 0.5
    vflip_p: float = 0.0
    rotation_deg: float = 15.0
    shift_frac: float = 0.08
    zoom: tuple[float, float] = (0.9, 1.1)
    skew_deg: float = 8.0
    enabled: bool = True

    def to_dict(self) -> AugmentationJson:
        return {"hflip_p": self.hflip_p, "vflip_p": self.vflip_p, "rotation_deg": self.rotation_deg,
                "shift_frac": self.shift_frac, "zoom": list(self.zoom), "skew_deg": self.skew_deg,
                "enabled": self.enabled}


NO_AUGMENTATION = Augmentation(enabled=False)


def affine_theta(rotation_deg: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor, zoom: torch.Tensor,
                 skew_deg: torch.Tensor, flip_x: torch.Tensor, flip_y: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) matrices for ``affine_grid`` from per-sample parameters (shifts in [-1, 1] units).

    ``affine_grid`` maps output coordinates to input coordinates, so the forward transform
    (flip, zoom, skew, rotate, then shift) is inverted here.
    """
    n = rotation_deg.shape[0]
    rot = torch.deg2rad(rotation_deg)
    cos, sin = torch.cos(rot), torch.sin(rot)
    eye = torch.eye(3, dtype=rotation_deg.dtype, device=rotation_deg.device).repeat(n, 1, 1)
    rotate, skew, scale, flip = eye.clone(), eye.clone(), eye.clone(), eye.clone()
    rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = cos, -sin, sin, cos
    skew[:, 0, 1] = torch.tan(torch.deg2rad(skew_deg))
    scale[:, 0, 0], scale[:, 1, 1] = zoom, zoom
    flip[:, 0, 0], flip[:, 1, 1] = flip_x, flip_y
    forward = rotate @ skew @ scale @ flip
    forward[:, 0, 2], forward[:, 1, 2] = shift_x, shift_y
    inverse: torch.Tensor = torch.linalg.inv(forward)
    return inverse[:, :2, :]


def warp(batch: torch.Tensor, theta: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    grid = functional.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    return functional.grid_sample(batch, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def augment(batch: torch.Tensor, config: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Randomly transformed copy of a normalised batch; parameters drawn from ``generator`` on CPU
    so that the same seed gives the same augmentations on any device."""
    if not config.enabled:
        return batch
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)

    def sign(p: float) -> torch.Tensor:
        return torch.where(torch.rand(n, generator=generator, dtype=torch.float64) < p, -1.0, 1.0).double()

    theta = affine_theta(uniform(-config.rotation_deg, config.rotation_deg),
                         uniform(-2 * config.shift_frac, 2 * config.shift_frac),
                         uniform(-2 * config.shift_frac, 2 * config.shift_frac),
                         uniform(*config.zoom), uniform(-config.skew_deg, config.skew_deg),
                         sign(config.hflip_p), sign(config.vflip_p))
    # Zero padding in normalised space is the ImageNet mean colour: neutral for the network.
    return warp(batch, theta.to(batch.device), padding_mode="zeros")


def tta_thetas(n: int) -> list[torch.Tensor]:
    """The fixed views test-time augmentation averages: identity, mirror, and +/-7 degree rotations."""
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    views = [(0.0, 1.0), (0.0, -1.0), (7.0, 1.0), (-7.0, 1.0)]
    return [affine_theta(zero + deg, zero, zero, one, zero, one * fx, one) for deg, fx in views]


def misregister(image: np.ndarray, *, channel: int, shift_px: tuple[float, float] = (0.0, 0.0),
                rotation_deg: float = 0.0, skew_deg: float = 0.0, zoom: float = 1.0) -> np.ndarray:
    """Move one channel of an HxWx3 composite against the other two (float32 in [0, 1] out).

    Reproduces the papers' deliberate misregistration (pixel shift, rotation, skew of one phase)
    to measure how much a model depends on registration.
    """
    if channel not in (0, 1, 2):
        raise ValueError(f"channel must be 0, 1 or 2, got {channel}")
    unit = as_unit_float(np.asarray(image))
    h, w = unit.shape[:2]
    plane = torch.from_numpy(unit[:, :, channel].copy())[None, None].double()

    def t(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float64)

    # pixel shifts to affine_grid's [-1, 1] units
    theta = affine_theta(t(rotation_deg), t(2.0 * shift_px[0] / w), t(2.0 * shift_px[1] / h), t(zoom),
                         t(skew_deg), t(1.0), t(1.0))
    moved = warp(plane, theta, padding_mode="zeros")[0, 0].float().numpy()
    out = unit.copy()
    out[:, :, channel] = np.clip(moved, 0.0, 1.0)
    return out


@dataclass(frozen=True)
class MisregistrationSpec:
    """A named misregistration setting for robustness runs (degrees and pixels, one channel)."""

    channel: int
    shift_px: tuple[float, float] = (0.0, 0.0)
    rotation_deg: float = 0.0
    skew_deg: float = 0.0

    def apply(self, image: np.ndarray) -> np.ndarray:
        return misregister(image, channel=self.channel, shift_px=self.shift_px,
                           rotation_deg=self.rotation_deg, skew_deg=self.skew_deg)
