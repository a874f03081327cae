"""The plan of one study: its series, the acquisitions (breath-holds) they hold, and rendering.

A series holds one acquisition, or several (phases of a single multiphase series, b-values of a
diffusion series). Each acquisition has its own grid, breath-hold offset and time, which is what
makes the same slice index show different anatomy in different phases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from worker.synth.anatomy import Lesion, layers_for, paint
from worker.synth.geometry import Grid, Vec3

Attributes = dict[str, object]
"""DICOM attributes by keyword, as written on a series or its images (None removes one)."""


@dataclass(frozen=True)
class Acquisition:
    """One block of images acquired together: a phase, an echo, a b-value."""

    role: str | None
    grid: Grid
    offset: Vec3
    time_s: float
    """AcquisitionTime of the first image, in seconds of the day."""
    number: int
    """AcquisitionNumber."""
    values: Mapping[str, Sequence[float]]
    """Signal (HU for CT) per tissue and lesion for this acquisition."""
    attrs: Mapping[str, object] = field(default_factory=dict)
    """Per-image attributes that differ between acquisitions of one series (None removes one)."""
    is_reference: bool = False
    noise: float = 1.0
    """Noise level: a scale of the CT quantum noise, or the MR noise standard deviation."""


@dataclass(frozen=True)
class SeriesPlan:
    """One series of the study: header attributes and its acquisitions in storage order."""

    number: int
    uid: str
    description: str
    kind: str
    """``image`` (a role), ``localizer``, ``mpr``, ``adc`` or ``dose``: only ``image`` carries roles."""
    acquisitions: tuple[Acquisition, ...]
    attrs: Mapping[str, object]


def render(grid: Grid, offset: Vec3, lesions: Sequence[Lesion], values: Mapping[str, Sequence[float]],
           background: Sequence[float]) -> np.ndarray:
    """The noise-free phantom on ``grid`` as (channels, plane, row, column) float32."""
    coords = grid.axis_coordinates()
    shape = (len(background), len(coords["z"]), len(coords["y"]), len(coords["x"]))
    volume = np.empty(shape, dtype=np.float32)
    for channel, value in enumerate(background):
        volume[channel] = value
    paint(volume, grid, layers_for(offset, lesions, values))
    return np.stack([grid.to_image_stack(volume[c]) for c in range(shape[0])])


def random_offset(rng: np.random.Generator, motion_mm: float) -> Vec3:
    """A breath-hold offset: mostly craniocaudal, up to ``motion_mm``, a little in-plane."""
    if motion_mm <= 0:
        return (0.0, 0.0, 0.0)
    dz = float(rng.uniform(-motion_mm, motion_mm))
    dx, dy = (float(v) for v in rng.normal(0.0, 0.12 * motion_mm, size=2))
    return (round(dx, 2), round(dy, 2), round(dz, 2))


PixelFn = Callable[[np.random.Generator, Acquisition], np.ndarray]
