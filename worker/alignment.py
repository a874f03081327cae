"""Rigid (translation) registration of each role onto the reference role, in a lesion-centred box.

Breathing moves the liver, mostly craniocaudally, against a still spine and body wall, so the
whole image is the wrong thing to register. The method, documented here because results quote it:

1. resample the role onto the reference grid (patient coordinates, no registration), only as far
   as the search reaches: the box grown by the largest shift tried;
2. inside a box around the lesion (or the given region), compare the two images by mutual
   information of their intensities (24-bin joint histogram over each whole volume's 1st-99th
   percentile range, estimated on every second voxel along each axis): contrast phases differ in
   brightness, and a lesion may even invert against the liver, which correlation-based measures
   (tried on raw and on gradient-magnitude images) mistake for misalignment;
3. search integer voxel shifts maximising it: craniocaudal first over the full range, then
   in-plane around it, then craniocaudal again; refine each axis to sub-voxel precision with a
   parabola through the neighbouring scores;
4. report the shift in millimetres (patient LPS) as the estimated motion of that role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import shift as shift_array

from worker.volumes import Region, Volume, resample_onto

Box = tuple[slice, slice, slice]
Shift = tuple[int, int, int]


@dataclass(frozen=True)
class Motion:
    """Estimated displacement of a role against the reference, in voxels and patient mm."""

    voxels: tuple[float, float, float]
    mm: tuple[float, float, float]
    score: float

    def as_json(self) -> dict[str, object]:
        return {"shift_mm": [round(v, 2) for v in self.mm], "shift_voxels": [round(v, 2) for v in self.voxels],
                "mutual_information": round(self.score, 3)}


HISTOGRAM_BINS = 24


def intensity_range(volume: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles of a volume's intensities: the range :func:`quantise` bins."""
    low, high = np.percentile(volume, (1.0, 99.0))
    return float(low), float(high)


def quantise(volume: np.ndarray, bins: int = HISTOGRAM_BINS, value_range: tuple[float, float] | None = None
             ) -> np.ndarray:
    """Intensities as bin numbers 0..bins-1 over ``value_range`` (the volume's own 1st-99th percentile
    range when not given: a part of a volume is binned over the whole volume's range)."""
    low, high = value_range or intensity_range(volume)
    if high <= low:
        return np.zeros(volume.shape, dtype=np.intp)
    scaled = (volume - low) * (bins / (high - low))
    return np.asarray(np.clip(scaled, 0, bins - 1), dtype=np.intp)


def mutual_information(a: np.ndarray, b: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Mutual information (nats) of two equally shaped arrays of bin numbers (see quantise)."""
    return _joint_information((a * bins + b).ravel(), bins)


def _joint_information(pairs: np.ndarray, bins: int) -> float:
    """Mutual information of joint bin numbers ``a * bins + b`` (one per voxel)."""
    joint = np.bincount(pairs.reshape(-1), minlength=bins * bins).reshape(bins, bins).astype(np.float64)
    total = joint.sum()
    if total == 0:
        return 0.0
    p = joint / total
    marginal = p.sum(axis=1, keepdims=True) @ p.sum(axis=0, keepdims=True)
    nonzero = p > 0
    return float((p[nonzero] * np.log(p[nonzero] / marginal[nonzero])).sum())


def _overlap(box: Box, shift: tuple[int, int, int], shape: tuple[int, ...]) -> Box | None:
    """The part of ``box`` whose shifted copy stays inside the volume (at least half of it)."""
    out = []
    for s, d, n in zip(box, shift, shape, strict=True):
        low, high = max(s.start, -d), min(s.stop, n - d)
        if high - low < max((s.stop - s.start) // 2, 1):
            return None
        out.append(slice(low, high))
    return out[0], out[1], out[2]


def _parabola(minus: float, centre: float, plus: float) -> float:
    denominator = minus - 2 * centre + plus
    return 0.0 if denominator >= 0 else float(np.clip(0.5 * (minus - plus) / denominator, -0.5, 0.5))


def register_translation(fixed: np.ndarray, moving: np.ndarray, box: Box, *,
                         max_shift: tuple[int, int, int] = (6, 4, 4),
                         ranges: tuple[tuple[float, float], tuple[float, float]] | None = None
                         ) -> tuple[tuple[float, float, float], float]:
    """Voxel shift d such that moving[x + d] best matches fixed[x] inside ``box``.

    ``ranges`` are the (fixed, moving) intensity ranges to bin over, when the arrays are parts of
    larger volumes; without them each array's own range is used.
    """
    # Joint bin numbers, (fixed bin) * bins + (moving bin) < bins ** 2, fit in 16 bits: a quarter of the
    # memory traffic of the hundreds of histograms a search makes; the fixed half is multiplied once.
    bins = HISTOGRAM_BINS
    fixed_rows = (quantise(fixed, value_range=None if ranges is None else ranges[0]) * bins).astype(np.uint16)
    moving_bins = quantise(moving, value_range=None if ranges is None else ranges[1]).astype(np.uint16)
    scores: dict[tuple[int, int, int], float] = {}

    def score(shift: tuple[int, int, int]) -> float:
        if shift not in scores:
            part = _overlap(box, shift, fixed.shape)
            if part is None:
                scores[shift] = -np.inf
            else:
                moved = tuple(slice(p.start + d, p.stop + d) for p, d in zip(part, shift, strict=True))
                scores[shift] = _joint_information(np.add(fixed_rows[part], moving_bins[moved]), bins)
        return scores[shift]

    best = (0, 0, 0)
    for dz in range(-max_shift[0], max_shift[0] + 1):
        if score((dz, 0, 0)) > score(best):
            best = (dz, 0, 0)
    for dy in range(-max_shift[1], max_shift[1] + 1):
        for dx in range(-max_shift[2], max_shift[2] + 1):
            candidate = (best[0], dy, dx)
            if score(candidate) > score(best):
                best = candidate
    for dz in range(-max_shift[0], max_shift[0] + 1):
        candidate = (dz, best[1], best[2])
        if score(candidate) > score(best):
            best = candidate
    refined = [best[axis] + _sub_voxel(score, best, axis) for axis in range(3)]
    return (refined[0], refined[1], refined[2]), score(best)


def _step(shift: Shift, axis: int, by: int) -> Shift:
    moved = list(shift)
    moved[axis] += by
    return moved[0], moved[1], moved[2]


def _sub_voxel(score: Callable[[Shift], float], best: Shift, axis: int) -> float:
    """The parabola's peak through the scores either side of ``best`` along ``axis`` (0 at an edge)."""
    s_minus, s_plus = score(_step(best, axis, -1)), score(_step(best, axis, 1))
    if not np.isfinite(s_minus) or not np.isfinite(s_plus):
        return 0.0
    return _parabola(s_minus, score(best), s_plus)


def box_around(reference: Volume, centre_mm: np.ndarray, half_size_mm: float) -> Box:
    """Voxel box of the reference grid around a patient point, clipped to the volume."""
    centre = reference.to_index(centre_mm[None, :])[0]
    spacing = np.array(reference.spacing)
    half = np.maximum(np.ceil(half_size_mm / spacing), 1).astype(int)
    box = []
    for axis in range(3):
        low = max(int(round(centre[axis])) - half[axis], 0)
        high = min(int(round(centre[axis])) + half[axis] + 1, reference.shape[axis])
        box.append(slice(low, max(high, low + 1)))
    return box[0], box[1], box[2]


RANGE_STRIDE = 2
"""Intensity ranges are percentiles of every 2nd voxel along each axis: an eighth of the work; they differ
from the exact ones only by sampling (a few HU; more where the 1st percentile falls between air and the fill)."""


def search_region(box: Box, max_shift: Shift, shape: tuple[int, int, int]) -> Box:
    """``box`` grown by the largest shift tried (and the sub-voxel step beyond it), clipped to the grid."""
    grown = [slice(max(s.start - d - 1, 0), min(s.stop + d + 1, n)) for s, d, n in zip(box, max_shift, shape,
                                                                                        strict=True)]
    return grown[0], grown[1], grown[2]


def estimate_motion(reference: Volume, moving: Volume, box: Box,
                    max_shift_mm: tuple[float, float, float] = (20.0, 8.0, 8.0)) -> Motion:
    """The translation that best aligns ``moving`` with the reference inside ``box``.

    Only the part of the grid that the search reaches is resampled; intensities are binned over the
    range of the whole volume on the reference grid (estimated on a regular subsample), as they would
    be if the whole volume were resampled.
    """
    spacing = np.array(reference.spacing)
    kk, jj, ii = (int(np.ceil(m / s)) for m, s in zip(max_shift_mm, spacing, strict=True))
    search = search_region(box, (kk, jj, ii), reference.shape)
    inner = tuple(slice(b.start - s.start, b.stop - s.start) for b, s in zip(box, search, strict=True))
    every = slice(None, None, RANGE_STRIDE)
    ranges = (intensity_range(reference.voxels[every, every, every]),
              intensity_range(resample_onto(moving, reference, region=(every, every, every))))
    moving_part = resample_onto(moving, reference, region=search)
    shift_vox, score = register_translation(reference.voxels[search], moving_part, (inner[0], inner[1], inner[2]),
                                            max_shift=(kk, jj, ii), ranges=ranges)
    # moving content at x + d corresponds to reference x: its displacement in space is A * d.
    shift_mm = reference.affine[:3, :3] @ np.array(shift_vox)
    x, y, z = (float(v) for v in shift_mm)
    return Motion(shift_vox, (x, y, z), score)


def align(reference: Volume, moving: Volume, box: Box | None, *, register: bool,
          max_shift_mm: tuple[float, float, float] = (20.0, 8.0, 8.0),
          region: Region | None = None) -> tuple[np.ndarray, Motion | None]:
    """``moving`` on the reference grid (only ``region`` of it, when given), registered inside ``box`` when asked."""
    if not register or box is None:
        return resample_onto(moving, reference, region=region), None
    motion = estimate_motion(reference, moving, box, max_shift_mm)
    return resample_onto(moving, reference, shift_mm=-np.array(motion.mm), region=region), motion


def displaced(voxels: np.ndarray, spacing: tuple[float, float, float], shift_mm: tuple[float, float, float]
              ) -> np.ndarray:
    """A volume on the reference grid moved by ``shift_mm`` (along its slice, row and column axes),
    linearly interpolated, the uncovered border filled with the nearest tissue (not zeros).

    For experiments that misregister a phase deliberately: the shift is in millimetres of the
    patient, whatever the lesion's size or the network's input size.
    """
    voxel_shift = [float(mm) / float(s) for mm, s in zip(shift_mm, spacing, strict=True)]
    moved: np.ndarray = shift_array(np.asarray(voxels, dtype=np.float32), voxel_shift, order=1, mode="nearest")
    return moved
