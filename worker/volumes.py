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
from scipy.ndimage import map_coordinates

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


def resample_onto(moving: Volume, reference: Volume, *, shift_mm: np.ndarray | None = None,
                  fill: float | None = None) -> np.ndarray:
    """``moving`` sampled at the reference grid's voxel centres (trilinear).

    ``shift_mm`` moves the moving volume's content by that displacement in patient space (the
    result of registration): the value at reference point p is taken from p - shift.
    """
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in reference.shape), indexing="ij")
    points = reference.to_patient(np.c_[kk.ravel(), jj.ravel(), ii.ravel()])
    if shift_mm is not None:
        points = points - shift_mm
    indices = moving.to_index(points).T
    value = float(moving.voxels.min()) if fill is None else fill
    sampled: np.ndarray = map_coordinates(moving.voxels, indices, order=1, mode="constant", cval=value)
    return sampled.reshape(reference.shape).astype(np.float32)
