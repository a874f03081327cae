"""What grouping needs to know of each series, read from headers only (no pixel data).

A real study is messy: several phases in one series, a thin and a thick reconstruction of the same
acquisition, localizers, reformats, screen saves, SEG and SR objects. This module turns a folder of
files into :class:`SeriesInfo` records (one per series, or per acquisition when one series holds
several), each with the facts the rules look at and nothing decided yet.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

log = logging.getLogger(__name__)

IMAGE_STORAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image, Enhanced CT (.2.1), Legacy converted (.2.2)
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image, Enhanced MR (.4.1), MR spectroscopy (.4.2 excluded below)
)
NON_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.4.2"}  # MR spectroscopy
SECONDS_PER_DAY = 86400.0

# Vendor-specific places a diffusion b-value may be (the standard tag is often absent).
_B_VALUE_TAGS = ((0x0018, 0x9087), (0x0043, 0x1039), (0x0019, 0x100C), (0x2001, 0x1003))


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
    image_type: tuple[str, ...] = ()
    pixel_spacing: tuple[float, float] | None = None
    images_in_acquisition: int | None = None  # (0020,1002), where the scanner writes it


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


def parse_time(value: Any) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF, or with colons) to seconds since midnight."""
    if value is None:
        return None
    text = str(value).strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600 + minutes * 60 + seconds


def _float(value: Any) -> float | None:
    try:
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip().upper() for v in value.split("\\") if v.strip())
    return tuple(str(v).strip().upper() for v in value if str(v).strip())


def _b_value(ds: Dataset) -> float | None:
    for tag in _B_VALUE_TAGS:
        element = ds.get(tag)
        if element is None:
            continue
        raw = element.value
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "ignore").split("\\")[0]
        value = _float(raw)
        if value is None:
            continue
        if tag == (0x0043, 0x1039) and value >= 1e9:  # GE stores 1000000000 + b
            value -= 1e9
        return value
    return None


def _point(value: Any) -> tuple[float, float, float] | None:
    """A three-valued attribute (ImagePositionPatient) as floats, or None when absent or malformed."""
    if not value or len(value) != 3:
        return None
    x, y, z = (float(v) for v in value)
    return x, y, z


def _spacing(value: Any) -> tuple[float, float] | None:
    """A two-valued attribute (PixelSpacing: row, column) as floats, or None."""
    if not value or len(value) != 2:
        return None
    row, column = (float(v) for v in value)
    return row, column


def _image_info(ds: Dataset, path: Path) -> ImageInfo:
    position = ds.get("ImagePositionPatient")
    orientation = ds.get("ImageOrientationPatient")
    acq_time = parse_time(ds.get("AcquisitionTime"))
    if acq_time is None and ds.get("AcquisitionDateTime"):
        text = str(ds.AcquisitionDateTime)
        acq_time = parse_time(text[8:]) if len(text) > 8 else None
    return ImageInfo(
        path=path,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        instance_number=_int(ds.get("InstanceNumber")),
        position=_point(position),
        orientation=tuple(float(v) for v in orientation) if orientation and len(orientation) == 6 else None,
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        temporal_position=_int(ds.get("TemporalPositionIdentifier")),
        acquisition_seconds=acq_time,
        echo_time=_float(ds.get("EchoTime")),
        b_value=_b_value(ds),
        image_type=_strings(ds.get("ImageType")),
        pixel_spacing=_spacing(ds.get("PixelSpacing")),
        images_in_acquisition=_int(ds.get("ImagesInAcquisition")),
    )


def _series_from(ds: Dataset) -> SeriesInfo:
    return SeriesInfo(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")).upper(),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        description=" ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName")).strip(),
        image_type=_strings(ds.get("ImageType")),
        frame_of_reference=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
        series_number=_int(ds.get("SeriesNumber")),
        slice_thickness=_float(ds.get("SliceThickness")),
        contrast_agent=str(ds.get("ContrastBolusAgent") or "").strip() or None,
        contrast_route=str(ds.get("ContrastBolusRoute") or "").strip() or None,
        contrast_start_seconds=parse_time(ds.get("ContrastBolusStartTime")),
        scanning_sequence=_strings(ds.get("ScanningSequence")),
        sequence_variant=_strings(ds.get("SequenceVariant")),
        sequence_name=str(ds.get("SequenceName") or ""),
        repetition_time=_float(ds.get("RepetitionTime")),
        echo_train_length=_float(ds.get("EchoTrainLength")),
        mr_acquisition_type=str(ds.get("MRAcquisitionType") or "").strip() or None,
        field_strength=_float(ds.get("MagneticFieldStrength")),
        manufacturer=str(ds.get("Manufacturer") or ""),
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
            series.images.append(_image_info(ds, path))
        except (TypeError, ValueError) as exc:
            scan.unreadable.append((path, f"unreadable geometry: {exc}"))
    for series in by_series.values():
        series.images.sort(key=lambda i: (i.acquisition_number or 0, i.instance_number or 0))
    return scan
