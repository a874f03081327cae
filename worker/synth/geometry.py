"""Image grids in patient coordinates (DICOM LPS: +x left, +y posterior, +z head).

A grid is a stack of parallel planes whose rows and columns run along two patient axes. Rendering
works on axis-aligned grids only, which covers axial series, coronal reformats and the three planes
of a localizer, and keeps the phantom fast to evaluate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

AXES = {"x": 0, "y": 1, "z": 2}
Vec3 = tuple[float, float, float]


def vec3(values: Iterable[float]) -> Vec3:
    """A point or size in patient coordinates from exactly three values."""
    x, y, z = values
    return x, y, z


@dataclass(frozen=True)
class Grid:
    """``n_slices`` planes of ``rows`` x ``columns`` pixels.

    ``row_axis`` is the patient axis that changes along a row (the image's column direction,
    first vector of ImageOrientationPatient), ``col_axis`` the one that changes down a column, and
    ``slice_axis`` the one across planes; each with a sign (+1 / -1) and a spacing in mm.
    ``origin`` is the centre of the first pixel of the first plane.
    """

    origin: Vec3
    rows: int
    columns: int
    n_slices: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns), as DICOM PixelSpacing
    slice_spacing: float
    slice_thickness: float
    row_axis: tuple[str, int] = ("x", 1)
    col_axis: tuple[str, int] = ("y", 1)
    slice_axis: tuple[str, int] = ("z", -1)

    @property
    def orientation(self) -> list[float]:
        """ImageOrientationPatient: the row direction, then the column direction."""
        out = [0.0] * 6
        out[AXES[self.row_axis[0]]] = float(self.row_axis[1])
        out[3 + AXES[self.col_axis[0]]] = float(self.col_axis[1])
        return out

    def position(self, index: int) -> list[float]:
        """ImagePositionPatient of plane ``index``."""
        pos = list(self.origin)
        axis, sign = self.slice_axis
        pos[AXES[axis]] += sign * index * self.slice_spacing
        return [round(v, 4) for v in pos]

    def axis_coordinates(self) -> dict[str, np.ndarray]:
        """The patient coordinate (mm) of every pixel centre along each of the three axes."""
        coords: dict[str, np.ndarray] = {}
        steps = ((self.row_axis, self.columns, self.pixel_spacing[1]),
                 (self.col_axis, self.rows, self.pixel_spacing[0]),
                 (self.slice_axis, self.n_slices, self.slice_spacing))
        for (axis, sign), count, step in steps:
            start = self.origin[AXES[axis]]
            coords[axis] = start + sign * step * np.arange(count, dtype=np.float64)
        return coords

    def resolution(self) -> dict[str, float]:
        """The width of a voxel along each patient axis (slice thickness across planes)."""
        return {self.row_axis[0]: self.pixel_spacing[1], self.col_axis[0]: self.pixel_spacing[0],
                self.slice_axis[0]: self.slice_thickness}

    def to_image_stack(self, volume_zyx: np.ndarray) -> np.ndarray:
        """Reorder a (z, y, x) rendering into (plane, row, column) order of this grid."""
        order = {"z": 0, "y": 1, "x": 2}
        return np.transpose(volume_zyx, (order[self.slice_axis[0]], order[self.col_axis[0]],
                                         order[self.row_axis[0]]))


def axial_grid(*, center_xy: tuple[float, float], top_z: float, fov_mm: float, matrix: int,
               n_slices: int, slice_spacing: float, slice_thickness: float) -> Grid:
    """A head-to-feet axial stack, as scanners write it: first image at the top of the range."""
    ps = fov_mm / matrix
    origin = (center_xy[0] - fov_mm / 2 + ps / 2, center_xy[1] - fov_mm / 2 + ps / 2, top_z)
    return Grid(origin=vec3(round(v, 4) for v in origin), rows=matrix, columns=matrix,
                n_slices=n_slices, pixel_spacing=(round(ps, 6), round(ps, 6)),
                slice_spacing=slice_spacing, slice_thickness=slice_thickness)


def planar_grid(*, plane: str, center: tuple[float, float, float], fov_mm: float, matrix: int,
                n_slices: int = 1, slice_spacing: float = 1.0, slice_thickness: float = 1.0) -> Grid:
    """A coronal or sagittal stack (rows run head to feet), or an axial one, centred on ``center``.

    Stacks of more than one plane run anterior to posterior (coronal) or right to left (sagittal).
    """
    ps = fov_mm / matrix
    half = fov_mm / 2 - ps / 2
    n_half = (n_slices - 1) / 2 * slice_spacing
    cx, cy, cz = center
    if plane == "coronal":
        origin = (cx - half, cy - n_half, cz + half)
        axes = (("x", 1), ("z", -1), ("y", 1))
    elif plane == "sagittal":
        origin = (cx - n_half, cy - half, cz + half)
        axes = (("y", 1), ("z", -1), ("x", 1))
    elif plane == "axial":
        origin = (cx - half, cy - half, cz + n_half)
        axes = (("x", 1), ("y", 1), ("z", -1))
    else:
        raise ValueError(f"plane must be axial, coronal or sagittal, not {plane!r}")
    return Grid(origin=vec3(round(v, 4) for v in origin), rows=matrix, columns=matrix,
                n_slices=n_slices, pixel_spacing=(round(ps, 6), round(ps, 6)),
                slice_spacing=slice_spacing, slice_thickness=slice_thickness,
                row_axis=axes[0], col_axis=axes[1], slice_axis=axes[2])
