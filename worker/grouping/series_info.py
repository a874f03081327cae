"""What grouping needs to know of each series, read from headers only (no pixel data).

A real study is messy: several phases in one series, a thin and a thick reconstruction of the same
acquisition, localizers, reformats, screen saves, SEG and SR objects. This module turns a folder of
files into :class:`SeriesInfo` records (one per series, or per acquisition when one series holds
several), each with the facts the rules look at and nothing decided yet. A multi-frame instance
(Enhanced or Legacy Converted CT/MR) contributes one image entry per frame, read by
:mod:`worker.grouping.frames`, so the rules never need to know which form the archive holds.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from worker.grouping.frames import (
    FrameFacts,
    as_float,
    as_int,
    as_strings,
    contrast_agent,
    contrast_start,
    dimension_names,
    frame_views,
    parse_time,
    read_frames,
    scanning_sequence,
)

log = logging.getLogger(__name__)
__all__ = ["ImageInfo", "SeriesInfo", "StudyScan", "image_infos", "iter_dicom_files", "parse_time",
           "scan_studies"]

IMAGE_STORAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image, Enhanced CT (.2.1), Legacy converted (.2.2)
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image, Enhanced MR (.4.1), MR spectroscopy (.4.2 excluded below)
)
NON_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.2"}  # MR spectroscopy
SECONDS_PER_DAY = 86400.0



@dataclass(frozen=True)
class ImageInfo:
    path: Path
    sop_instance_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    acquisition_number: int | None
    temporal_position: int | None
    acquisition_seconds: float | None  # seconds since midnight of the study day
    echo_time: float | None
    b_value: float | None
    image_type: tuple[str, ...] = ()  # ImageType, or the frame's FrameType
    pixel_spacing: tuple[float, float] | None = None
    images_in_acquisition: int | None = None  # (0020,1002), where the scanner writes it
    frame_number: int | None = None  # 1-based frame of a multi-frame instance; None for a classic image
    stack_id: str | None = None
    dimension_values: tuple[int, ...] = ()
    contrast: bool | None = None
    reference_seconds: float | None = None

    @property
    def reference(self) -> tuple[str, int | None]:
        """How a derived object names this image: SOP Instance UID and, for a frame, its number."""
        return self.sop_instance_uid, self.frame_number


@dataclass
class SeriesInfo:
    """One series, or one acquisition of a series that held several (``acquisition_number`` set)."""

    study_uid: str
    series_uid: str
    modality: str
    sop_class_uid: str
    description: str
    image_type: tuple[str, ...]
    frame_of_reference: str | None
    images: list[ImageInfo] = field(default_factory=list)
    acquisition_number: int | None = None  # only when split from a multi-acquisition series
    series_number: int | None = None
    slice_thickness: float | None = None
    contrast_agent: str | None = None
    contrast_route: str | None = None
    contrast_start_seconds: float | None = None
    scanning_sequence: tuple[str, ...] = ()
    sequence_variant: tuple[str, ...] = ()
    sequence_name: str = ""
    repetition_time: float | None = None
    echo_train_length: float | None = None
    mr_acquisition_type: str | None = None
    field_strength: float | None = None
    manufacturer: str = ""
    dimension_names: tuple[str, ...] = ()  # what each DimensionIndexValues position indexes

    # --- derived facts ---------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """How this (virtual) series is named in results: UID, plus #acquisition when split."""
        return self.series_uid if self.acquisition_number is None else f"{self.series_uid}#{self.acquisition_number}"

    @property
    def is_image_series(self) -> bool:
        uid = self.sop_class_uid
        return uid.startswith(IMAGE_STORAGE_PREFIXES) and uid not in NON_IMAGE_CLASSES

    @property
    def acquisition_seconds(self) -> float | None:
        """The start of the acquisition (earliest image time)."""
        times = [i.acquisition_seconds for i in self.images if i.acquisition_seconds is not None]
        return min(times) if times else None

    @property
    def seconds_after_injection(self) -> float | None:
        start, acquired = self.contrast_start_seconds, self.acquisition_seconds
        if start is None or acquired is None:
            return None
        delta = acquired - start
        if delta < -SECONDS_PER_DAY / 2:  # the injection was before midnight, the scan after
            delta += SECONDS_PER_DAY
        return delta

    @property
    def echo_time(self) -> float | None:
        values = [i.echo_time for i in self.images if i.echo_time is not None]
        return statistics.median(values) if values else None

    @property
    def b_values(self) -> set[float]:
        return {i.b_value for i in self.images if i.b_value is not None}

    @property
    def orientations(self) -> set[str]:
        return {_plane(i.orientation) for i in self.images}

    @property
    def plane(self) -> str:
        planes = self.orientations
        return planes.pop() if len(planes) == 1 else "mixed"

    @property
    def text(self) -> str:
        """Everything free-text that names the series, for the description rules."""
        return self.description

    def with_images(self, images: list[ImageInfo], acquisition_number: int) -> SeriesInfo:
        clone = SeriesInfo(**{k: v for k, v in self.__dict__.items() if k not in ("images", "acquisition_number")})
        clone.images = images
        clone.acquisition_number = acquisition_number
        if images and images[0].image_type:
            clone.image_type = images[0].image_type  # e.g. IN_PHASE vs OUT_PHASE of one dual-echo series
        return clone


def _plane(orientation: tuple[float, ...] | None) -> str:
    if not orientation or len(orientation) != 6:
        return "unknown"
    r, c = orientation[:3], orientation[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    axis = max(range(3), key=lambda k: abs(normal[k]))
    norm = math.sqrt(sum(v * v for v in normal)) or 1.0
    if abs(normal[axis]) / norm < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _image_info(facts: FrameFacts, sop_instance_uid: str, instance_number: int | None, path: Path,
                images_in_acquisition: int | None) -> ImageInfo:
    return ImageInfo(
        path=path,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        position=facts.position,
        orientation=facts.orientation,
        acquisition_number=facts.acquisition_number,
        temporal_position=facts.temporal_position,
        acquisition_seconds=facts.acquisition_seconds,
        echo_time=facts.echo_time,
        b_value=facts.b_value,
        image_type=facts.frame_type,
        pixel_spacing=facts.pixel_spacing,
        frame_number=facts.frame_number,
        stack_id=facts.stack_id,
        dimension_values=facts.dimension_values,
        contrast=facts.contrast,
        reference_seconds=facts.reference_seconds,
        images_in_acquisition=images_in_acquisition,
    )


def image_infos(ds: Dataset, path: Path) -> list[ImageInfo]:
    """One entry per frame of an image object (one for a classic image)."""
    uid, number = str(ds.get("SOPInstanceUID", "")), as_int(ds.get("InstanceNumber"))
    announced = as_int(ds.get("ImagesInAcquisition"))
    return [_image_info(facts, uid, number, path, announced) for facts in read_frames(ds)]


def _series_from(ds: Dataset) -> SeriesInfo:
    first = frame_views(ds)[0]  # series facts as the first frame (or classic image) states them
    return SeriesInfo(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")).upper(),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        description=" ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")).strip(),
        image_type=as_strings(first.get("FrameType", "CTImageFrameTypeSequence", "MRImageFrameTypeSequence"))
        or as_strings(ds.get("ImageType")),
        frame_of_reference=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
        series_number=as_int(ds.get("SeriesNumber")),
        slice_thickness=as_float(first.get("SliceThickness", "PixelMeasuresSequence")),
        contrast_agent=contrast_agent(first),
        contrast_route=str(first.get("ContrastBolusRoute") or "").strip() or None,
        contrast_start_seconds=contrast_start(first),
        scanning_sequence=scanning_sequence(first),
        sequence_variant=as_strings(first.get("SequenceVariant")),
        sequence_name=str(first.get("SequenceName") or first.get("PulseSequenceName") or ""),
        repetition_time=as_float(first.get("RepetitionTime", "MRTimingAndRelatedParametersSequence")),
        echo_train_length=as_float(first.get("EchoTrainLength", "MRTimingAndRelatedParametersSequence")),
        mr_acquisition_type=str(first.get("MRAcquisitionType") or "").strip() or None,
        field_strength=as_float(first.get("MagneticFieldStrength")),
        manufacturer=str(ds.get("Manufacturer") or ""),
        dimension_names=dimension_names(ds),
    )


def iter_dicom_files(paths: Iterable[Path]) -> Iterable[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path


@dataclass
class StudyScan:
    """Every series of the studies found under some paths, and the files that could not be read."""

    series: dict[str, list[SeriesInfo]] = field(default_factory=lambda: defaultdict(list))
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def scan_studies(paths: Iterable[Path]) -> StudyScan:
    """Read headers of every file under ``paths`` and group them into series, per study."""
    by_series: dict[str, SeriesInfo] = {}
    scan = StudyScan()
    for path in iter_dicom_files(paths):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            scan.unreadable.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        series_uid = str(ds.get("SeriesInstanceUID", ""))
        if not series_uid or not ds.get("StudyInstanceUID"):
            scan.unreadable.append((path, "no Study/Series Instance UID"))
            continue
        series = by_series.get(series_uid)
        if series is None:
            series = by_series[series_uid] = _series_from(ds)
            scan.series[series.study_uid].append(series)
        try:
            series.images.extend(image_infos(ds, path))
        except (TypeError, ValueError) as exc:
            scan.unreadable.append((path, f"unreadable geometry: {exc}"))
    for series in by_series.values():
        series.images.sort(key=lambda i: (i.acquisition_number or 0, i.instance_number or 0, i.frame_number or 0))
    return scan
