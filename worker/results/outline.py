"""The lesion's outline on the one source image a reader is shown: the SEG's contour, else the box.

The SR's image region and the Secondary Capture's reference panel draw this same outline on the
same slice (the reference phase's image through the lesion's largest cross-section), so a viewer
that draws TID 1500 regions puts it where the Secondary Capture shows it. The SEG may have been
drawn on another phase's grid, so its frames are placed geometrically (patient coordinates), not
matched by SOP Instance UID. Coordinates are DICOM SCOORD image coordinates: (column, row), with
0.0\\0.0 at the top left corner of the top left pixel, so a pixel's centre is its index + 0.5.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import contourpy
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from scipy.ndimage import map_coordinates

from worker.grouping.frames import FrameView, as_float
from worker.roi import Lesion, seg_frame_geometry

log = logging.getLogger(__name__)

DEFAULT_SLICE_SPACING_MM = 5.0


class OutlineKind(StrEnum):
    SEG_CONTOUR = "seg-contour"
    BOX = "box"


@dataclass(frozen=True)
class ImagePlane:
    """Where an image's pixels lie in patient space (from its header)."""

    position: np.ndarray  # centre of the top left pixel, mm
    row_direction: np.ndarray  # unit vector of increasing column index
    column_direction: np.ndarray  # unit vector of increasing row index
    spacing: tuple[float, float]  # between rows, between columns (mm)
    shape: tuple[int, int]  # rows, columns
    thickness: float  # slice spacing or thickness (mm), how far off the plane a SEG frame may lie

    @classmethod
    def of(cls, header: Dataset, frame_number: int | None = None) -> ImagePlane:
        """The plane of a classic image, or of one frame of a multi-frame image (its functional groups)."""
        view = FrameView(header, frame_number)
        position = view.get("ImagePositionPatient", "PlanePositionSequence")
        orientation_values = view.get("ImageOrientationPatient", "PlaneOrientationSequence")
        spacing = view.get("PixelSpacing", "PixelMeasuresSequence")
        if position is None or orientation_values is None or spacing is None:
            raise ValueError(f"image {header.get('SOPInstanceUID', '')} frame {frame_number} has no plane geometry")
        orientation = np.asarray(orientation_values, dtype=float)
        row_spacing, column_spacing = (float(v) for v in spacing)
        thickness = (as_float(view.get("SpacingBetweenSlices", "PixelMeasuresSequence"))
                     or as_float(view.get("SliceThickness", "PixelMeasuresSequence")) or DEFAULT_SLICE_SPACING_MM)
        return cls(np.asarray(position, dtype=float), orientation[:3], orientation[3:],
                   (row_spacing, column_spacing), (int(header.Rows), int(header.Columns)), thickness)

    @property
    def normal(self) -> np.ndarray:
        normal: np.ndarray = np.cross(self.row_direction, self.column_direction)
        return normal

    def to_pixel_index(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) patient points to (N, 3): fractional row index, column index, distance from the plane."""
        offset = np.asarray(points, dtype=float) - self.position
        return np.stack([offset @ self.column_direction / self.spacing[0],
                         offset @ self.row_direction / self.spacing[1], offset @ self.normal], axis=-1)

    def pixel_centres(self) -> np.ndarray:
        """(rows * columns, 3) patient coordinates of every pixel centre, row-major."""
        rows, columns = np.meshgrid(np.arange(self.shape[0]), np.arange(self.shape[1]), indexing="ij")
        centres: np.ndarray = (self.position + rows.reshape(-1, 1) * self.spacing[0] * self.column_direction
                               + columns.reshape(-1, 1) * self.spacing[1] * self.row_direction)
        return centres


@dataclass(frozen=True)
class Outline:
    kind: OutlineKind
    polyline: np.ndarray  # (N, 2) closed, SCOORD (column, row) on the image


def _frame_plane(seg: Dataset, frame: int) -> tuple[ImagePlane, int]:
    position, orientation, spacing, segment = seg_frame_geometry(seg, frame)
    return ImagePlane(position, orientation[:3], orientation[3:], spacing, (int(seg.Rows), int(seg.Columns)),
                      0.0), segment


def seg_mask_on(plane: ImagePlane, seg_path: Path, segment_number: int) -> np.ndarray | None:
    """The segment's mask resampled onto ``plane`` from its nearest parallel frame, or None if none is close."""
    seg = dcmread(seg_path)
    masks = seg.pixel_array
    if masks.ndim == 2:
        masks = masks[None]
    best: tuple[float, int, ImagePlane] | None = None
    for frame in range(masks.shape[0]):
        frame_plane, segment = _frame_plane(seg, frame)
        if segment != segment_number or abs(float(frame_plane.normal @ plane.normal)) < 0.99:
            continue
        distance = abs(float((frame_plane.position - plane.position) @ plane.normal))
        if distance <= plane.thickness / 2 + 1e-3 and (best is None or distance < best[0]) and masks[frame].any():
            best = (distance, frame, frame_plane)
    if best is None:
        return None
    _, frame, frame_plane = best
    index = frame_plane.to_pixel_index(plane.pixel_centres())
    sampled = map_coordinates(masks[frame].astype(np.float32), index[:, :2].T, order=0, mode="constant", cval=0.0)
    mask: np.ndarray = sampled.reshape(plane.shape) > 0.5
    return mask if mask.any() else None


def contour(mask: np.ndarray) -> np.ndarray:
    """The longest closed outline of a binary mask, SCOORD (column, row), on the pixels' edges."""
    padded = np.pad(mask.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded).lines(0.5)
    longest = max((np.asarray(line, dtype=float) for line in lines), key=len)
    polyline = longest + 0.5 - 1.0  # padding off, pixel centre = index + 0.5
    if not np.allclose(polyline[0], polyline[-1]):
        polyline = np.vstack([polyline, polyline[:1]])
    return polyline


def box_on(plane: ImagePlane, lesion: Lesion) -> np.ndarray:
    """The lesion's patient-space box projected onto the image, as a closed SCOORD rectangle."""
    low, high = np.asarray(lesion.box_min_mm), np.asarray(lesion.box_max_mm)
    corners = np.array([[(high if i & 1 else low)[0], (high if i & 2 else low)[1], (high if i & 4 else low)[2]]
                        for i in range(8)])
    index = plane.to_pixel_index(corners)
    r0, c0 = index[:, :2].min(axis=0) + 0.5
    r1, c1 = index[:, :2].max(axis=0) + 0.5
    return np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)


def lesion_outline(lesion: Lesion, header: Dataset, frame_number: int | None = None) -> Outline:
    """The SEG contour of the lesion on ``header``'s image (or its frame) when it came from a SEG, else its box."""
    plane = ImagePlane.of(header, frame_number)
    if lesion.segment is not None:
        mask = seg_mask_on(plane, *lesion.segment)
        if mask is not None:
            return Outline(OutlineKind.SEG_CONTOUR, contour(mask))
        log.info("lesion %s: no SEG frame on the reference image; outlining its box", lesion.lesion_id)
    return Outline(OutlineKind.BOX, box_on(plane, lesion))
