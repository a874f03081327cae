"""Geometry: volumes in patient space, resampling across grids, translation registration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from worker.alignment import align, box_around, estimate_motion, intensity_range, register_translation
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


def oblique_volume(shape: tuple[int, int, int], origin: np.ndarray, tilt: float) -> Volume:
    """A phantom volume whose rows lean by ``tilt`` (so resampling onto an axial grid is not per axis)."""
    row = np.array([1.0, tilt, 0.0]) / np.hypot(1.0, tilt)
    column = np.array([-tilt, 1.0, 0.0]) / np.hypot(1.0, tilt)
    affine = affine_from(origin, np.r_[row, column], (1.1, 0.95), np.array([0.0, 0.2, 2.6]))
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    points = Volume(np.zeros(shape, np.float32), affine).to_patient(np.c_[kk.ravel(), jj.ravel(), ii.ravel()])
    return Volume(phantom(points).reshape(shape).astype(np.float32), affine)


def sampled_at_every_point(moving: Volume, reference: Volume, shift_mm: np.ndarray) -> np.ndarray:
    """The slow definition: every reference voxel's patient point, back into the moving volume."""
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in reference.shape), indexing="ij")
    points = reference.to_patient(np.c_[kk.ravel(), jj.ravel(), ii.ravel()]) - shift_mm
    values = map_coordinates(moving.voxels, moving.to_index(points).T, order=1, mode="constant",
                             cval=float(moving.voxels.min()))
    return values.reshape(reference.shape)


@pytest.mark.parametrize("tilt", [0.0, 0.08])
def test_a_resampled_region_is_that_part_of_the_whole(tilt: float) -> None:
    reference = sampled_volume((14, 36, 40), (2.5, 1.0, 1.0), np.array([-20.0, -18.0, -17.0]))
    moving = oblique_volume((12, 38, 38), np.array([-21.0, -19.5, -15.5]), tilt)
    shift = np.array([1.7, -2.3, 3.1])
    whole = resample_onto(moving, reference, shift_mm=shift)
    assert np.allclose(whole, sampled_at_every_point(moving, reference, shift), atol=1e-3)
    for region in [(slice(3, 9), slice(None), slice(None)), (slice(None, None, 2),) * 3,
                   (slice(0, 14, 3), slice(5, 30, 2), slice(1, 39))]:
        part = resample_onto(moving, reference, shift_mm=shift, region=region)
        assert part.shape == whole[region].shape and np.array_equal(part, whole[region])


@pytest.mark.parametrize("centre_mm", [(0.0, 0.0, 0.0), (-12.0, 14.0, -11.0)])
def test_registering_in_the_search_region_equals_registering_the_whole_volume(centre_mm: tuple[float, ...]) -> None:
    """The box near the middle and near a corner (where shifted boxes are clipped by the volume)."""
    spacing = (2.0, 1.5, 1.5)
    reference = sampled_volume((16, 40, 40), spacing, np.array([-30.0, -30.0, -16.0]))
    moving = sampled_volume((16, 40, 40), spacing, np.array([-30.0, -30.0, -16.0]),
                            shift=np.array([2.0, -3.0, 5.0]))
    box = box_around(reference, np.array(centre_mm), 10.0)
    motion = estimate_motion(reference, moving, box, (8.0, 6.0, 6.0))
    every = (slice(None, None, 2),) * 3
    ranges = (intensity_range(reference.voxels[every]), intensity_range(resample_onto(moving, reference)[every]))
    whole, score = register_translation(reference.voxels, resample_onto(moving, reference), box, max_shift=(4, 4, 4),
                                        ranges=ranges)
    assert motion.voxels == pytest.approx(whole, abs=1e-9) and motion.score == pytest.approx(score, abs=1e-12)
