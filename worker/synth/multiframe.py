"""The same study as an archive that converted it: Legacy Converted Enhanced CT/MR objects.

Many PACS and migration tools turn each classic CT/MR series into one Legacy Converted Enhanced
instance (same Series Instance UID, one frame per former image, the classic attributes moved into
functional groups). highdicom's converters do exactly that, so a study written classic and then
converted is a twin whose grouping, volumes and composites must agree with the original. A SEG in
the study is pointed at the new instance and its frame numbers, as a converting archive keeps
references consistent.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom
from highdicom.legacy import LegacyConvertedEnhancedCTImage, LegacyConvertedEnhancedMRImage
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_CONVERTERS = {CT_IMAGE: LegacyConvertedEnhancedCTImage, MR_IMAGE: LegacyConvertedEnhancedMRImage}

FrameMap = dict[str, tuple[str, int]]
"""Classic SOP Instance UID -> (converted SOP Instance UID, frame number)."""


def convert_series(datasets: list[Dataset]) -> tuple[Dataset, FrameMap]:
    """One Legacy Converted Enhanced instance from a classic CT or MR series (same series UID)."""
    first = datasets[0]
    converter = _CONVERTERS[str(first.SOPClassUID)]
    uid = generate_uid(entropy_srcs=[str(first.SeriesInstanceUID), "legacy-converted"])
    converted = converter(datasets, series_instance_uid=str(first.SeriesInstanceUID),
                          series_number=int(first.get("SeriesNumber") or 1), sop_instance_uid=uid,
                          instance_number=1)
    frames: FrameMap = {}
    for number, item in enumerate(converted.PerFrameFunctionalGroupsSequence, start=1):
        for source in item.get("ConversionSourceAttributesSequence") or []:
            frames[str(source.ReferencedSOPInstanceUID)] = (uid, number)
    return converted, frames


def _point_seg_at_frames(seg: Dataset, frames: FrameMap, classes: dict[str, str]) -> None:
    """Re-point a SEG's source-image references at the converted instances and their frames."""
    for frame in seg.get("PerFrameFunctionalGroupsSequence") or []:
        for derivation in frame.get("DerivationImageSequence") or []:
            for item in derivation.get("SourceImageSequence") or []:
                target = frames.get(str(item.get("ReferencedSOPInstanceUID", "")))
                if target is not None:
                    item.ReferencedSOPInstanceUID, item.ReferencedFrameNumber = target
                    item.ReferencedSOPClassUID = classes[target[0]]
    for series in seg.get("ReferencedSeriesSequence") or []:
        kept: dict[str, Dataset] = {}
        for item in series.get("ReferencedInstanceSequence") or []:
            target = frames.get(str(item.get("ReferencedSOPInstanceUID", "")))
            if target is not None:
                item.ReferencedSOPInstanceUID, item.ReferencedSOPClassUID = target[0], classes[target[0]]
            kept.setdefault(str(item.ReferencedSOPInstanceUID), item)  # one entry per instance, not per frame
        series.ReferencedInstanceSequence = list(kept.values())


def convert_study(folder: Path) -> int:
    """Replace each classic CT/MR series in ``folder`` by one converted instance; returns how many."""
    by_series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    segs: list[tuple[Path, Dataset]] = []
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if str(ds.SOPClassUID) in _CONVERTERS:
            by_series[str(ds.SeriesInstanceUID)].append((path, ds))
        elif str(ds.SOPClassUID) == SEG_STORAGE:
            segs.append((path, ds))
    frames: FrameMap = {}
    classes: dict[str, str] = {}
    for members in by_series.values():
        converted, mapping = convert_series([ds for _, ds in members])
        frames.update(mapping)
        classes[str(converted.SOPInstanceUID)] = str(converted.SOPClassUID)
        for path, _ in members:
            path.unlink()
        converted.save_as(members[0][0].with_name(f"{members[0][0].stem}-mf.dcm"), enforce_file_format=True)
    for path, seg in segs:
        _point_seg_at_frames(seg, frames, classes)
        seg.save_as(path, enforce_file_format=True)
    return len(by_series)
