"""Series as volumes in patient coordinates, and resampling one onto another's grid.

Phases are acquired in different breath-holds with different fields of view and slice positions:
the same slice index is not the same anatomy. Every volume therefore carries the affine that maps
voxel indices (k, j, i) to patient millimetres (LPS), built from ImagePositionPatient,
ImageOrientationPatient and PixelSpacing, and all roles are resampled onto the reference role's grid.
The frames of an Enhanced or Legacy Converted instance are slices like classic images: their
geometry and rescale come from the functional groups (:mod:`worker.grouping.frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from scipy.ndimage import affine_transform

from worker.grouping.frames import frame_pixels
from worker.grouping.series_info import ImageInfo, SeriesInfo


class VolumeError(ValueError):
    """A series cannot be turned into a volume (missing geometry, mixed sizes, undecodable pixels)."""


@dataclass(frozen=True)
class Volume:
    """Voxels (slices, rows, columns) and the 4x4 affine from (k, j, i, 1) to patient mm."""

    voxels: np.ndarray
    affine: np.ndarray
    frame_of_reference: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        slices, rows, columns = self.voxels.shape
        return slices, rows, columns

    @property
    def spacing(self) -> tuple[float, float, float]:
        k, j, i = (float(np.linalg.norm(self.affine[:3, axis])) for axis in range(3))
        return k, j, i

    def to_patient(self, indices: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices (k, j, i) to (N, 3) patient coordinates."""
        homogeneous = np.c_[indices, np.ones(len(indices))]
        patient: np.ndarray = (homogeneous @ self.affine.T)[:, :3]
        return patient

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) patient coordinates to (N, 3) fractional voxel indices (k, j, i)."""
        homogeneous = np.c_[points, np.ones(len(points))]
        indices: np.ndarray = (homogeneous @ np.linalg.inv(self.affine).T)[:, :3]
        return indices


def affine_from(position: np.ndarray, orientation: np.ndarray, pixel_spacing: tuple[float, float],
                slice_step: np.ndarray) -> np.ndarray:
    """Affine for index (k, j, i): k along ``slice_step``, j down the rows, i along the columns."""
    row_dir, col_dir = orientation[:3], orientation[3:]  # direction of increasing column / row index
    affine = np.eye(4)
    affine[:3, 0] = slice_step
    affine[:3, 1] = col_dir * pixel_spacing[0]  # PixelSpacing[0] is the distance between rows
    affine[:3, 2] = row_dir * pixel_spacing[1]
    affine[:3, 3] = position
    return affine


def load_volume(series: SeriesInfo) -> Volume:
    """Decode a (virtual) series into a volume of rescaled values (HU for CT)."""
    located = [(i, i.position, i.orientation) for i in series.images
               if i.position is not None and i.orientation is not None]
    if len(located) < 2:
        raise VolumeError(f"series {series.key} has fewer than two images with geometry")
    orientation = np.asarray(located[0][2], dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    order = sorted(located, key=lambda item: float(np.dot(normal, item[1])))
    spacing = next((image.pixel_spacing for image, _, _ in order if image.pixel_spacing is not None), None)
    if spacing is None:
        raise VolumeError(f"series {series.key} has no pixel spacing")
    slices = _planes([image for image, _, _ in order], series.key)
    if len({s.shape for s in slices}) != 1:
        raise VolumeError(f"series {series.key} mixes image sizes")
    positions = np.array([position for _, position, _ in order], dtype=float)
    steps = np.diff(positions, axis=0)
    step = steps.mean(axis=0) if len(steps) else normal
    if len(steps) and np.max(np.linalg.norm(steps - step, axis=1)) > 0.1 * np.linalg.norm(step) + 0.01:
        raise VolumeError(f"series {series.key} has irregular slice spacing")
    affine = affine_from(positions[0], orientation, spacing, step)
    return Volume(np.stack(slices), affine, series.frame_of_reference)


def _planes(images: list[ImageInfo], key: str) -> list[np.ndarray]:
    """Rescaled pixels of each image or frame, reading a multi-frame file once for all its frames."""
    opened: dict[Path, Dataset] = {}
    planes = []
    for image in images:
        ds: Dataset | None = opened.get(image.path)
        if ds is None:
            ds = dcmread(image.path)
            if image.frame_number is not None:
                opened[image.path] = ds
        try:
            planes.append(frame_pixels(ds, image.frame_number))
        except Exception as exc:  # an undecodable image, whatever the codec raises, is a typed failure
            raise VolumeError(f"cannot decode pixels of series {key}: {exc}") from exc
    return planes


AXIS_ALIGNED = 1e-9
"""Largest cross term (voxels per voxel) of an index-to-index map still treated as axis-aligned."""

Region = tuple[slice, slice, slice]
"""Part of a grid, one slice per axis (start, stop, step); ``slice(None)`` takes the whole axis."""


def region_of(shape: tuple[int, int, int], region: Region | None) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(4x4 map from the region's own indices to the grid's, region shape) of ``region`` of a grid."""
    scale = np.eye(4)
    extent = []
    for axis, part in enumerate(region or (slice(None),) * 3):
        start, stop, step = part.indices(shape[axis])
        scale[axis, axis], scale[axis, 3] = step, start
        extent.append(len(range(start, stop, step)))
    return scale, (extent[0], extent[1], extent[2])


def resample_onto(moving: Volume, reference: Volume, *, shift_mm: np.ndarray | None = None,
                  fill: float | None = None, region: Region | None = None) -> np.ndarray:
    """``moving`` sampled at the reference grid's voxel centres (trilinear), or at those of ``region``.

    ``shift_mm`` moves the moving volume's content by that displacement in patient space (the
    result of registration): the value at reference point p is taken from p - shift. Only the
    voxels asked for are computed (the analysis needs the lesion's slices, not the whole grid):
    index to index is one affine map, so no coordinates are built in memory.
    """
    scale, shape = region_of(reference.shape, region)
    moved = np.eye(4)
    if shift_mm is not None:
        moved[:3, 3] = -np.asarray(shift_mm, dtype=float)
    matrix = np.linalg.inv(moving.affine) @ moved @ reference.affine @ scale
    value = float(moving.voxels.min()) if fill is None else fill
    linear = matrix[:3, :3]
    if np.all(np.abs(linear - np.diag(np.diag(linear))) < AXIS_ALIGNED):
        # Grids along the same axes (the usual case: axial series): scipy's per-axis path, ~1.6x faster.
        sampled: np.ndarray = affine_transform(moving.voxels, np.diag(linear), offset=matrix[:3, 3],
                                               output_shape=shape, order=1, mode="constant", cval=value)
    else:
        sampled = affine_transform(moving.voxels, matrix, output_shape=shape, order=1, mode="constant", cval=value)
    return sampled.astype(np.float32, copy=False)
