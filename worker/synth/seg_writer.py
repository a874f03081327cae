"""One DICOM SEG per study: a segment per lesion, drawn on the reference series' images.

The SEG is how lesion location travels with a study from an annotation tool: each segment's
TrackingID is the lesion_id of labels.csv, and the segment references the source images it was
drawn on. Only the generation of studies imports this module (and highdicom), never the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, TM

from worker.synth.anatomy import Lesion
from worker.synth.geometry import Grid, Vec3

SEG_SOFTWARE = "triphase-synth 1"


def lesion_mask(lesion: Lesion, grid: Grid, offset: Vec3) -> np.ndarray:
    """Voxels of ``grid`` (plane, row, column) whose centre lies inside the moved lesion.

    A lesion smaller than the slice spacing may fall between slice centres; it is then drawn on
    the nearest plane with its largest cross-section, as a reader would outline it.
    """
    coords = grid.axis_coordinates()
    centre = [c + o for c, o in zip(lesion.center, offset, strict=True)]
    rx, ry, rz = lesion.radii
    dx = ((coords["x"] - centre[0]) / rx)[None, None, :]
    dy = ((coords["y"] - centre[1]) / ry)[None, :, None]
    dz = ((coords["z"] - centre[2]) / rz)[:, None, None]
    inside = (dx * dx + dy * dy + dz * dz) <= 1.0
    if not inside.any():
        nearest = int(np.argmin(np.abs(coords["z"] - centre[2])))
        inside[nearest] = ((dx * dx + dy * dy) <= 1.0)[0]
    return grid.to_image_stack(inside)


def build_seg(source_images: Sequence[Dataset], masks: Sequence[np.ndarray], lesions: Sequence[Lesion], *,
              series_uid: str, sop_uid: str, series_number: int, tracking_uids: Sequence[str],
              manufacturer: str, content_date: str, content_time: str,
              dimension_uid: str) -> Dataset:
    """A binary SEG whose segment ``i`` is lesion ``i`` (TrackingID = lesion_id).

    highdicom stamps creation times and a random dimension organisation UID; both are replaced by
    values derived from the study so that the same seed writes the same bytes.
    """
    descriptions = []
    for number, (lesion, tracking_uid) in enumerate(zip(lesions, tracking_uids, strict=True), start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Lesion {lesion.lesion_id}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_id=lesion.lesion_id,
            tracking_uid=tracking_uid,
            anatomic_regions=[codes.SCT.Liver],
        ))
    pixel_array = np.stack(masks, axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="triphase synth",
        software_versions=SEG_SOFTWARE,
        device_serial_number="SYNTH-0001",
        content_description="Liver lesions",
        content_label="LESIONS",
        content_creator_name="SYNTH^ANNOTATOR",
        series_description="Lesion annotation",
    )
    date, time = DA(content_date), TM(content_time)
    seg.InstanceCreationDate = seg.ContentDate = seg.SeriesDate = date
    seg.InstanceCreationTime = seg.ContentTime = seg.SeriesTime = time
    _replace(seg, "DimensionOrganizationUID", dimension_uid)
    _replace(seg, "ContributionDateTime", content_date + content_time)
    return seg


def _replace(ds: Dataset, keyword: str, value: str) -> None:
    for elem in ds.iterall():
        if elem.keyword == keyword:
            elem.value = value


def write_seg(seg: Dataset, path: Path) -> Path:
    seg.save_as(path, enforce_file_format=True)
    return path
