"""Where the lesions are: from a DICOM SEG that travels with the study, or a declared fallback.

Each lesion becomes a box in patient coordinates plus the position of its largest axial cross
section; the composite is cut there. Without an annotation the study is analysed with a fallback
whose name goes into every result, so no one mistakes a whole-liver crop for a lesion analysis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from worker.grouping.frames import as_int
from worker.grouping.series_info import SeriesInfo

log = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
SR_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
TRACKING_IDENTIFIER = ("112039", "DCM")


Point = tuple[float, float, float]


def _point(values: Iterable[float]) -> Point:
    """A patient-coordinate point (mm) from exactly three values."""
    x, y, z = (float(v) for v in values)
    return x, y, z


class RoiSource(StrEnum):
    SEG = "seg"
    SR = "sr-image-region"
    RTSTRUCT = "rtstruct"
    FALLBACK_CENTRE = "fallback-centre-crop"


@dataclass(frozen=True)
class Lesion:
    lesion_id: str
    source: RoiSource
    centre_mm: Point
    box_min_mm: Point
    box_max_mm: Point
    largest_slice_mm: Point  # a point on the axial plane of largest area
    label: str = ""
    segment: tuple[Path, int] | None = None  # SEG file and segment number, to draw the lesion's contour

    @property
    def size_mm(self) -> float:
        return float(max(np.subtract(self.box_max_mm, self.box_min_mm)))


ImageGeometry = tuple[np.ndarray, np.ndarray, tuple[float, float]]
"""Position, orientation (6 values) and pixel spacing (row, column) of one image or frame."""
GeometryIndex = dict[tuple[str, int | None], ImageGeometry]
"""(SOP Instance UID, frame number or None for a classic image) -> that image's geometry."""


def geometry_index(series: Iterable[SeriesInfo]) -> GeometryIndex:
    """The geometry of every image and frame of some series, as derived objects reference them."""
    return {image.reference: (np.asarray(image.position), np.asarray(image.orientation), image.pixel_spacing)
            for item in series for image in item.images
            if image.position is not None and image.orientation is not None and image.pixel_spacing is not None}


def referenced_geometry(index: GeometryIndex, reference: Dataset) -> ImageGeometry | None:
    """The image an item with ReferencedSOPInstanceUID (and ReferencedFrameNumber) points at.

    A reference without a frame number to a one-frame instance, or with frame 1 to a classic
    image, means the same image.
    """
    uid = str(reference.get("ReferencedSOPInstanceUID", ""))
    frame = as_int(reference.get("ReferencedFrameNumber"))  # the first, when a region spans several
    for key in ((uid, frame), (uid, None if frame == 1 else 1 if frame is None else frame)):
        if key in index:
            return index[key]
    return None


def _source_geometry(per_frame: Dataset, index: GeometryIndex) -> ImageGeometry | None:
    """The geometry of the source frame a SEG frame was derived from (DerivationImageSequence)."""
    for derivation in per_frame.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            found = referenced_geometry(index, source)
            if found is not None:
                return found
    return None


def seg_frame_geometry(ds: Dataset, frame: int, index: GeometryIndex | None = None
                    ) -> tuple[np.ndarray, np.ndarray, tuple[float, float], int]:
    """Position, orientation, pixel spacing and segment number of one SEG frame.

    The SEG's own plane position and orientation are used; without them, those of the source
    image or frame it references (SOP Instance UID and ReferencedFrameNumber) in ``index``.
    """
    per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()

    def item(name: str) -> Dataset | None:
        for groups in (per_frame, shared):
            if name in groups and groups[name]:
                found: Dataset = groups[name][0]
                return found
        return None

    segment_item = item("SegmentIdentificationSequence")
    if segment_item is None:
        raise ValueError(f"SEG frame {frame + 1} has no SegmentIdentificationSequence")
    segment = int(segment_item.ReferencedSegmentNumber)
    position, orientation, measures = (item(n) for n in ("PlanePositionSequence", "PlaneOrientationSequence",
                                                         "PixelMeasuresSequence"))
    source = _source_geometry(per_frame, index or {})
    if position is None or orientation is None or measures is None:
        if source is None:
            raise ValueError(f"SEG frame {frame + 1} has no plane geometry and no resolvable source frame")
        return source[0], source[1], source[2], segment
    row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
    return (np.array(position.ImagePositionPatient, dtype=float),
            np.array(orientation.ImageOrientationPatient, dtype=float), (row_spacing, column_spacing), segment)


def lesions_from_seg(path: Path, geometry: GeometryIndex | None = None) -> list[Lesion]:
    """One lesion per segment of a DICOM Segmentation (TrackingID becomes the lesion id).

    ``geometry`` (from :func:`geometry_index`) places frames whose SEG lacks plane geometry via
    the source image or multi-frame frame they reference.
    """
    ds = dcmread(path)
    masks = ds.pixel_array
    if masks.ndim == 2:
        masks = masks[None]
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    points: dict[int, list[np.ndarray]] = {}
    areas: dict[int, list[tuple[float, np.ndarray]]] = {}
    for frame in range(masks.shape[0]):
        position, orientation, spacing, segment = seg_frame_geometry(ds, frame, geometry)
        rows, cols = np.nonzero(masks[frame])
        if not len(rows):
            continue
        row_dir, col_dir = orientation[:3], orientation[3:]
        coords = (position[None, :] + cols[:, None] * spacing[1] * row_dir[None, :]
                  + rows[:, None] * spacing[0] * col_dir[None, :])
        points.setdefault(segment, []).append(coords)
        areas.setdefault(segment, []).append((len(rows) * spacing[0] * spacing[1], coords.mean(axis=0)))
    lesions: list[Lesion] = []
    for number, chunks in sorted(points.items()):
        coords = np.concatenate(chunks)
        description = segments.get(number)
        tracking = str(description.get("TrackingID", "") or "") if description is not None else ""
        largest = max(areas[number], key=lambda a: a[0])[1]
        lesions.append(Lesion(
            lesion_id=tracking or f"L{number}", source=RoiSource.SEG,
            centre_mm=_point(coords.mean(axis=0)), box_min_mm=_point(coords.min(axis=0)),
            box_max_mm=_point(coords.max(axis=0)), largest_slice_mm=_point(largest),
            label=str(description.get("SegmentLabel", "")) if description is not None else "",
            segment=(path, number),
        ))
    return lesions


def _lesion_from_slices(lesion_id: str, source: RoiSource, slices: list[np.ndarray], label: str = "") -> Lesion:
    """A lesion from planar outlines or point sets (one (N, 3) array per slice, patient mm)."""
    points = np.concatenate(slices)

    def area(outline: np.ndarray) -> float:
        if len(outline) < 3:
            return 0.0
        centred = outline - outline.mean(axis=0)
        normal = np.cross(centred[1] - centred[0], centred[2] - centred[0])
        cross = sum(np.cross(centred[i], centred[(i + 1) % len(centred)]) for i in range(len(centred)))
        return float(abs(np.dot(cross, normal / (np.linalg.norm(normal) or 1.0))) / 2)

    largest = max(slices, key=area).mean(axis=0)
    return Lesion(lesion_id, source, _point(points.mean(axis=0)), _point(points.min(axis=0)),
                  _point(points.max(axis=0)), _point(largest), label)


def lesions_from_rtstruct(path: Path) -> list[Lesion]:
    """One lesion per ROI of an RT Structure Set (its contours are in patient coordinates)."""
    ds = dcmread(path)
    names = {int(r.ROINumber): str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])}
    lesions: list[Lesion] = []
    for index, roi in enumerate(ds.get("ROIContourSequence", []), start=1):
        slices = [np.asarray(c.ContourData, dtype=float).reshape(-1, 3) for c in roi.get("ContourSequence", [])
                  if "ContourData" in c and len(c.ContourData) >= 3]
        if not slices:
            continue
        number = int(roi.get("ReferencedROINumber", index))
        lesions.append(_lesion_from_slices(f"L{len(lesions) + 1}", RoiSource.RTSTRUCT, slices,
                                           names.get(number, "")))
    return lesions


def _walk_regions(items: Iterable[Dataset] | None, tracking: str, found: dict[str, list[tuple[Dataset, str]]]) -> None:
    for item in items or []:
        concept = item.get("ConceptNameCodeSequence")
        code = (str(concept[0].CodeValue), str(concept[0].CodingSchemeDesignator)) if concept else None
        current = tracking
        if item.get("ValueType") == "CONTAINER":
            for child in item.get("ContentSequence", []):
                child_concept = child.get("ConceptNameCodeSequence")
                if (child.get("ValueType") == "TEXT" and child_concept and
                        (str(child_concept[0].CodeValue), str(child_concept[0].CodingSchemeDesignator))
                        == TRACKING_IDENTIFIER):
                    current = str(child.TextValue)
        if code == TRACKING_IDENTIFIER and item.get("ValueType") == "TEXT":
            continue
        if item.get("ValueType") in ("SCOORD", "SCOORD3D"):
            found.setdefault(current, []).append((item, item.ValueType))
        _walk_regions(item.get("ContentSequence"), current, found)


def lesions_from_sr(path: Path, image_geometry: GeometryIndex) -> list[Lesion]:
    """Lesions from image regions in a TID 1500 SR: SCOORD3D directly, SCOORD via its image.

    ``image_geometry`` (from :func:`geometry_index`) maps (SOP Instance UID, frame number) to
    (position, orientation, pixel spacing) so a 2-D region drawn on an image, or on one frame of a
    multi-frame image (ReferencedFrameNumber), can be placed in patient coordinates.
    """
    ds = dcmread(path)
    found: dict[str, list[tuple[Dataset, str]]] = {}
    _walk_regions(ds.get("ContentSequence"), "", found)
    lesions: list[Lesion] = []
    for tracking, regions in found.items():
        slices = []
        for item, kind in regions:
            data = np.asarray(item.GraphicData, dtype=float)
            if kind == "SCOORD3D":
                slices.append(data.reshape(-1, 3))
                continue
            reference = next((c for c in item.get("ContentSequence", []) if "ReferencedSOPSequence" in c), None)
            if reference is None:
                continue
            located = referenced_geometry(image_geometry, reference.ReferencedSOPSequence[0])
            if located is None:
                continue
            position, orientation, spacing = located
            columns, rows = data.reshape(-1, 2).T  # SCOORD is (column, row) pairs
            slices.append(position[None, :] + columns[:, None] * spacing[1] * orientation[None, :3]
                          + rows[:, None] * spacing[0] * orientation[None, 3:])
        if slices:
            lesions.append(_lesion_from_slices(tracking or f"L{len(lesions) + 1}", RoiSource.SR, slices))
    return lesions


def annotation_files(series: list[SeriesInfo]) -> dict[str, list[Path]]:
    """SEG, RTSTRUCT and SR files among one study's series (as the header scan found them)."""
    found: dict[str, list[Path]] = {"seg": [], "rtstruct": [], "sr": []}
    for item in series:
        kind = ("seg" if item.sop_class_uid == SEG_STORAGE else "rtstruct" if item.sop_class_uid == RTSTRUCT_STORAGE
                else "sr" if item.sop_class_uid.startswith(SR_STORAGE_PREFIX) else None)
        if kind:  # a multi-frame object (a SEG) has an entry per frame: list each file once
            found[kind].extend(path for path in dict.fromkeys(image.path for image in item.images)
                               if path not in found[kind])
    return found


def fallback_lesion(centre_mm: np.ndarray, half_size_mm: float) -> Lesion:
    """A centred crop used when the study carries no annotation (declared, never silent)."""
    centre = _point(centre_mm)
    low = _point(v - half_size_mm for v in centre_mm)
    high = _point(v + half_size_mm for v in centre_mm)
    return Lesion("L1", RoiSource.FALLBACK_CENTRE, centre, low, high, centre)
