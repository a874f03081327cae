"""Where the lesions are: from a DICOM SEG that travels with the study, or a declared fallback.

Each lesion becomes a box in patient coordinates plus the position of its largest axial cross
section; the composite is cut there. Without an annotation the study is analysed with a fallback
whose name goes into every result, so no one mistakes a whole-liver crop for a lesion analysis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class RoiSource(StrEnum):
    SEG = "seg"
    FALLBACK_CENTRE = "fallback-centre-crop"


@dataclass(frozen=True)
class Lesion:
    lesion_id: str
    source: RoiSource
    centre_mm: tuple[float, float, float]
    box_min_mm: tuple[float, float, float]
    box_max_mm: tuple[float, float, float]
    largest_slice_mm: tuple[float, float, float]  # a point on the axial plane of largest area
    label: str = ""

    @property
    def size_mm(self) -> float:
        return float(max(np.subtract(self.box_max_mm, self.box_min_mm)))


def _frame_geometry(ds: Dataset, frame: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], int]:
    """Position, orientation, pixel spacing and segment number of one SEG frame."""
    per_frame = ds.PerFrameFunctionalGroupsSequence[frame]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else Dataset()

    def item(name: str) -> Dataset:
        for groups in (per_frame, shared):
            if name in groups:
                return groups[name][0]
        raise ValueError(f"SEG frame {frame + 1} has no {name}")

    position = np.array(item("PlanePositionSequence").ImagePositionPatient, dtype=float)
    orientation = np.array(item("PlaneOrientationSequence").ImageOrientationPatient, dtype=float)
    spacing = tuple(float(v) for v in item("PixelMeasuresSequence").PixelSpacing)
    segment = int(item("SegmentIdentificationSequence").ReferencedSegmentNumber)
    return position, orientation, spacing, segment  # type: ignore[return-value]


def lesions_from_seg(path: Path) -> list[Lesion]:
    """One lesion per segment of a DICOM Segmentation (TrackingID becomes the lesion id)."""
    ds = dcmread(path)
    masks = ds.pixel_array
    if masks.ndim == 2:
        masks = masks[None]
    segments = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    points: dict[int, list[np.ndarray]] = {}
    areas: dict[int, list[tuple[float, np.ndarray]]] = {}
    for frame in range(masks.shape[0]):
        position, orientation, spacing, segment = _frame_geometry(ds, frame)
        rows, cols = np.nonzero(masks[frame])
        if not len(rows):
            continue
        row_dir, col_dir = orientation[:3], orientation[3:]
        coords = (position[None, :] + cols[:, None] * spacing[1] * row_dir[None, :]
                  + rows[:, None] * spacing[0] * col_dir[None, :])
        points.setdefault(segment, []).append(coords)
        areas.setdefault(segment, []).append((len(rows) * spacing[0] * spacing[1], coords.mean(axis=0)))
    lesions = []
    for number, chunks in sorted(points.items()):
        coords = np.concatenate(chunks)
        description = segments.get(number)
        tracking = str(description.get("TrackingID", "") or "") if description is not None else ""
        largest = max(areas[number], key=lambda a: a[0])[1]
        lesions.append(Lesion(
            lesion_id=tracking or f"L{number}", source=RoiSource.SEG,
            centre_mm=tuple(coords.mean(axis=0)), box_min_mm=tuple(coords.min(axis=0)),  # type: ignore[arg-type]
            box_max_mm=tuple(coords.max(axis=0)), largest_slice_mm=tuple(largest),  # type: ignore[arg-type]
            label=str(description.get("SegmentLabel", "")) if description is not None else "",
        ))
    return lesions


def find_seg_files(paths: list[Path], study_uid: str) -> list[Path]:
    """SEG objects of one study among the given files (headers only)."""
    found = []
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "StudyInstanceUID"])
        except Exception:  # noqa: BLE001 - not DICOM: not a SEG
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_STORAGE and str(ds.get("StudyInstanceUID", "")) == study_uid:
            found.append(path)
    return found


def fallback_lesion(centre_mm: np.ndarray, half_size_mm: float) -> Lesion:
    """A centred crop used when the study carries no annotation (declared, never silent)."""
    centre = tuple(float(v) for v in centre_mm)
    low = tuple(float(v - half_size_mm) for v in centre_mm)
    high = tuple(float(v + half_size_mm) for v in centre_mm)
    return Lesion("L1", RoiSource.FALLBACK_CENTRE, centre, low, high, centre)  # type: ignore[arg-type]
