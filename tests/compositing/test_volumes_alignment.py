"""Geometry: volumes in patient space, resampling across grids, translation registration."""

from __future__ import annotations

import numpy as np
import pytest

from worker.alignment import align, box_around, register_translation
from worker.volumes import Volume, affine_from, resample_onto


def phantom(points: np.ndarray) -> np.ndarray:
    """A smooth 3-D pattern with edges: two blobs and a slab, defined in patient mm."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    blob1 = 100 * np.exp(-(((x - 10) ** 2 + (y + 5) ** 2 + (z - 3) ** 2) / 80.0))
    blob2 = 60 * np.exp(-(((x + 15) ** 2 + (y - 12) ** 2 + (z + 8) ** 2) / 150.0))
    slab = 40 * (1 / (1 + np.exp(-(x + 0.3 * y - 20) / 1.5)))
    return blob1 + blob2 + slab


def sampled_volume(shape: tuple[int, int, int], spacing: tuple[float, float, float], origin: np.ndarray,
                   shift: np.ndarray | None = None) -> Volume:
    orientation = np.array([1.0, 0, 0, 0, 1.0, 0])
    affine = affine_from(origin, orientation, (spacing[1], spacing[2]), np.array([0, 0, spacing[0]]))
    vol = Volume(np.zeros(shape, np.float32), affine)
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    points = vol.to_patient(np.c_[kk.ravel(), jj.ravel(), ii.ravel()])
    if shift is not None:
        points = points - shift  # content displaced by +shift
    return Volume(phantom(points).reshape(shape).astype(np.float32), affine)


def test_affine_round_trip() -> None:
    vol = sampled_volume((5, 6, 7), (2.5, 0.8, 0.9), np.array([-10.0, -20.0, 30.0]))
    idx = np.array([[0, 0, 0], [4, 5, 6], [2, 3, 1]], float)
    assert np.allclose(vol.to_index(vol.to_patient(idx)), idx)
    assert vol.to_patient(np.array([[1.0, 2.0, 3.0]]))[0] == pytest.approx([-10 + 3 * 0.9, -20 + 2 * 0.8, 32.5])
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.9))


def test_slices_match_across_thickness_and_start() -> None:
    reference = sampled_volume((12, 40, 40), (2.0, 1.0, 1.0), np.array([-20.0, -20.0, -12.0]))
    thick = sampled_volume((6, 40, 40), (5.0, 1.0, 1.0), np.array([-20.0, -20.0, -14.5]))  # other start
    resampled = resample_onto(thick, reference)
    inside = (slice(2, 9), slice(5, 35), slice(5, 35))  # away from the thick volume's edges
    error = np.abs(resampled[inside] - reference.voxels[inside])
    assert error.mean() < 1.5 and error.max() < 8  # linear interpolation of a smooth field


@pytest.mark.parametrize("shift_mm", [(6.0, -2.0, 1.0), (0.0, 3.0, -4.0), (-9.0, 1.5, 0.0)])
def test_registration_recovers_known_offsets_within_a_voxel(shift_mm: tuple[float, float, float]) -> None:
    spacing = (2.0, 1.5, 1.5)
    reference = sampled_volume((16, 40, 40), spacing, np.array([-30.0, -30.0, -16.0]))
    patient_shift = np.array([shift_mm[2], shift_mm[1], shift_mm[0]])  # (x, y, z)
    moving = sampled_volume((16, 40, 40), spacing, np.array([-30.0, -30.0, -16.0]), shift=patient_shift)
    box = box_around(reference, np.array([0.0, 0.0, 0.0]), 18.0)
    aligned, motion = align(reference, moving, box, register=True)
    assert motion is not None
    assert np.allclose(motion.mm, patient_shift, atol=max(spacing) * 0.5 + 0.25), motion
    before = np.abs(resample_onto(moving, reference)[box] - reference.voxels[box]).mean()
    after = np.abs(aligned[box] - reference.voxels[box]).mean()
    assert after < before / 2


def test_registration_without_signal_stays_put() -> None:
    flat = np.ones((10, 20, 20), np.float32)
    box = (slice(2, 8), slice(5, 15), slice(5, 15))
    shift, _ = register_translation(flat, flat, box)
    assert shift == (0.0, 0.0, 0.0)
