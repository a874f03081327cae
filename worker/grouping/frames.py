"""Per-frame geometry and acquisition facts, wherever an image object keeps them.

A classic CT or MR image carries one frame and keeps its facts at the top level (ImagePositionPatient,
EchoTime, ContrastBolusAgent). Enhanced CT/MR and the Legacy Converted Enhanced objects that PACS
and converters make from classic series keep the same facts per frame in functional groups: a
macro in the frame's PerFrameFunctionalGroupsSequence item wins over the same macro in the
SharedFunctionalGroupsSequence, and a converted object may park classic attributes it has no macro
for in the Unassigned Per-Frame / Shared Converted Attributes sequences. Reading all forms through
one :class:`FrameView` lets grouping, volumes and annotations treat a frame exactly like a classic
image, so the same study gives the same answer whichever form the archive holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

# Vendor-specific places a diffusion b-value may be (the standard tag is often absent).
_B_VALUE_TAGS = ((0x0018, 0x9087), (0x0043, 0x1039), (0x0019, 0x100C), (0x2001, 0x1003))
_ECHO_PULSE_SEQUENCE = {"GRADIENT": ("GR",), "SPIN": ("SE",), "BOTH": ("SE", "GR")}


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


def parse_datetime_time(value: Any) -> float | None:
    """The time of day of a DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) in seconds; None without a time."""
    text = str(value or "").strip()
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]  # the offset from UTC does not move the study day
    return parse_time(text[8:]) if len(text) > 8 else None


def as_float(value: Any) -> float | None:
    """A number from a DS/IS/US value (the first of several), or None when absent or malformed."""
    try:
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if number is None else int(number)


def as_strings(value: Any) -> tuple[str, ...]:
    """A CS value (one or several) as upper-case strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip().upper() for v in value.split("\\") if v.strip())
    return tuple(str(v).strip().upper() for v in value if str(v).strip())


def as_point(value: Any) -> tuple[float, float, float] | None:
    """A three-valued attribute (ImagePositionPatient) as floats, or None when absent or malformed."""
    if not value or len(value) != 3:
        return None
    x, y, z = (float(v) for v in value)
    return x, y, z


def as_pair(value: Any) -> tuple[float, float] | None:
    """A two-valued attribute (PixelSpacing: row, column; window centre, width) as floats, or None."""
    if not value or len(value) != 2:
        return None
    first, second = (float(v) for v in value)
    return first, second


#: Enhanced CT, Legacy Converted Enhanced CT, Enhanced MR, Enhanced MR Color, Legacy Converted Enhanced MR.
MULTI_FRAME_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",
                                 "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3",
                                 "1.2.840.10008.5.1.4.1.1.4.4"})


def is_multiframe(ds: Dataset) -> bool:
    """Whether the object is made of numbered frames (Enhanced, Legacy Converted), each its own image.

    Functional groups say so, and so does a multi-frame SOP class or more than one frame: an
    Enhanced MR stripped of its functional groups (as some anonymisers and samples are) still has
    frames that derived objects must name by number.
    """
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return True
    return str(ds.get("SOPClassUID", "")) in MULTI_FRAME_CLASSES or (as_int(ds.get("NumberOfFrames")) or 1) > 1


class FrameView:
    """Attribute look-up for one frame: its per-frame macros, the shared ones, converted leftovers, top level."""

    def __init__(self, ds: Dataset, frame_number: int | None = None) -> None:
        self.ds = ds
        self.frame_number = frame_number
        per_frame = ds.get("PerFrameFunctionalGroupsSequence") or [] if frame_number is not None else []
        shared = ds.get("SharedFunctionalGroupsSequence") or [] if frame_number is not None else []
        own = per_frame[frame_number - 1] if frame_number is not None and 0 < frame_number <= len(per_frame) else None
        common = shared[0] if shared else None
        self._groups: list[Dataset] = [g for g in (own, common) if g is not None]
        self._unassigned: list[Dataset] = [
            items[0] for g, name in ((own, "UnassignedPerFrameConvertedAttributesSequence"),
                                     (common, "UnassignedSharedConvertedAttributesSequence"))
            if g is not None and (items := g.get(name))]

    def macro(self, sequence: str) -> Dataset | None:
        """The first item of a functional-group macro for this frame (per-frame before shared)."""
        for groups in self._groups:
            items = groups.get(sequence)
            if items:
                found: Dataset = items[0]
                return found
        return None

    def get(self, keyword: str, *macros: str) -> Any:
        """``keyword`` from the first of ``macros`` that has it, else the converted leftovers, else the top."""
        for name in macros:
            item = self.macro(name)
            if item is not None and item.get(keyword) not in (None, ""):
                return item.get(keyword)
        for item in (*self._unassigned, self.ds):
            value = item.get(keyword)
            if value not in (None, ""):
                return value
        return None

    def get_tag(self, tag: tuple[int, int]) -> Any:
        """A (private) tag's raw value from the converted leftovers or the top level."""
        for item in (*self._unassigned, self.ds):
            element = item.get(tag)
            if element is not None:
                return element.value
        return None


def frame_views(ds: Dataset) -> list[FrameView]:
    """One view per frame: a classic image is one frame without a number; frames count from 1."""
    if not is_multiframe(ds):
        return [FrameView(ds)]
    count = as_int(ds.get("NumberOfFrames")) or len(ds.get("PerFrameFunctionalGroupsSequence") or []) or 1
    return [FrameView(ds, number) for number in range(1, count + 1)]


@dataclass(frozen=True)
class FrameFacts:
    """What one frame (or classic image) says about where and when it was acquired."""

    frame_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    acquisition_number: int | None
    acquisition_seconds: float | None  # seconds since midnight of the study day
    reference_seconds: float | None  # FrameReferenceDateTime: the time the frame's data refer to
    temporal_position: int | None
    dimension_values: tuple[int, ...]
    stack_id: str | None
    in_stack_position: int | None
    contrast: bool | None  # administered (YES/NO in ContrastBolusUsage, or an agent named), None when silent
    echo_time: float | None
    echo_train_length: float | None
    b_value: float | None
    frame_type: tuple[str, ...]
    window: tuple[float, float] | None  # centre, width
    rescale: tuple[float, float]  # slope, intercept


def _b_value(view: FrameView) -> float | None:
    standard = as_float(view.get("DiffusionBValue", "MRDiffusionSequence"))
    if standard is not None:
        return standard
    for tag in _B_VALUE_TAGS:
        raw = view.get_tag(tag)
        if isinstance(raw, bytes):
            raw = raw.decode("ascii", "ignore").split("\\")[0]
        value = as_float(raw)
        if value is None:
            continue
        if tag == (0x0043, 0x1039) and value >= 1e9:  # GE stores 1000000000 + b
            value -= 1e9
        return value
    return None


def _contrast(view: FrameView) -> bool | None:
    usage = view.macro("ContrastBolusUsageSequence")
    if usage is not None and usage.get("ContrastBolusAgentAdministered"):
        return str(usage.ContrastBolusAgentAdministered).upper() == "YES"
    return True if view.get("ContrastBolusAgent") else None


def _acquisition_seconds(view: FrameView) -> float | None:
    seconds = parse_datetime_time(view.get("FrameAcquisitionDateTime", "FrameContentSequence"))
    if seconds is None:
        seconds = parse_time(view.get("AcquisitionTime"))
    if seconds is None:
        seconds = parse_datetime_time(view.get("AcquisitionDateTime"))
    return seconds


def _content(view: FrameView, keyword: str) -> Any:
    """A Frame Content attribute of this frame only (never a top-level attribute of the same name)."""
    item = view.macro("FrameContentSequence")
    return None if item is None else item.get(keyword)


def _first_int(*values: Any) -> int | None:
    return next((number for number in map(as_int, values) if number is not None), None)


def _dimension_values(view: FrameView) -> tuple[int, ...]:
    raw = _content(view, "DimensionIndexValues")
    if raw is None or raw == "":
        return ()
    return (int(raw),) if isinstance(raw, int) else tuple(int(v) for v in raw)


def frame_facts(view: FrameView) -> FrameFacts:
    """Read one frame's facts (raises ValueError/TypeError on malformed geometry)."""
    orientation = view.get("ImageOrientationPatient", "PlaneOrientationSequence")
    stack = _content(view, "StackID")
    return FrameFacts(
        frame_number=view.frame_number,
        position=as_point(view.get("ImagePositionPatient", "PlanePositionSequence")),
        orientation=tuple(float(v) for v in orientation) if orientation and len(orientation) == 6 else None,
        pixel_spacing=as_pair(view.get("PixelSpacing", "PixelMeasuresSequence")),
        slice_thickness=as_float(view.get("SliceThickness", "PixelMeasuresSequence")),
        acquisition_number=_first_int(_content(view, "FrameAcquisitionNumber"), view.get("AcquisitionNumber")),
        acquisition_seconds=_acquisition_seconds(view),
        reference_seconds=parse_datetime_time(view.get("FrameReferenceDateTime", "FrameContentSequence")),
        temporal_position=_first_int(_content(view, "TemporalPositionIndex"), view.get("TemporalPositionIdentifier")),
        dimension_values=_dimension_values(view),
        stack_id=str(stack) if stack not in (None, "") else None,
        in_stack_position=as_int(_content(view, "InStackPositionNumber")),
        contrast=_contrast(view),
        echo_time=as_float(view.get("EffectiveEchoTime", "MREchoSequence")) if view.macro("MREchoSequence")
        else as_float(view.get("EchoTime")),
        echo_train_length=as_float(view.get("EchoTrainLength", "MRTimingAndRelatedParametersSequence")),
        b_value=_b_value(view),
        frame_type=as_strings(view.get("FrameType", "CTImageFrameTypeSequence", "MRImageFrameTypeSequence"))
        or as_strings(view.get("ImageType")),
        window=_window(view),
        rescale=(as_float(view.get("RescaleSlope", "PixelValueTransformationSequence")) or 1.0,
                 as_float(view.get("RescaleIntercept", "PixelValueTransformationSequence")) or 0.0),
    )


def _window(view: FrameView) -> tuple[float, float] | None:
    centre = as_float(view.get("WindowCenter", "FrameVOILUTSequence"))
    width = as_float(view.get("WindowWidth", "FrameVOILUTSequence"))
    return None if centre is None or width is None else (centre, width)


def read_frames(ds: Dataset) -> list[FrameFacts]:
    """The facts of every frame of an image object (one entry for a classic image)."""
    return [frame_facts(view) for view in frame_views(ds)]


def scanning_sequence(view: FrameView) -> tuple[str, ...]:
    """ScanningSequence, or what an Enhanced MR's EchoPulseSequence (GRADIENT/SPIN/BOTH) says of it."""
    classic = as_strings(view.get("ScanningSequence"))
    if classic:
        return classic
    found = _ECHO_PULSE_SEQUENCE.get(str(view.get("EchoPulseSequence") or "").upper(), ())
    if str(view.get("EchoPlanarPulseSequence") or "").upper() == "YES":
        found = (*found, "EP")
    return found


def contrast_agent(view: FrameView) -> str | None:
    """The agent's name: ContrastBolusAgent, or the code meaning in an Enhanced Contrast/Bolus module."""
    text = str(view.get("ContrastBolusAgent") or "").strip()
    if text:
        return text
    for agent in view.ds.get("ContrastBolusAgentSequence") or []:
        meaning = str(agent.get("CodeMeaning") or agent.get("CodeValue") or "").strip()
        if meaning:
            return meaning
    return None


def contrast_start(view: FrameView) -> float | None:
    """ContrastBolusStartTime, at the top or in an Enhanced agent's administration profile."""
    start = parse_time(view.get("ContrastBolusStartTime"))
    if start is not None:
        return start
    for agent in view.ds.get("ContrastBolusAgentSequence") or []:
        for profile in agent.get("ContrastAdministrationProfileSequence") or []:
            start = parse_time(profile.get("ContrastBolusStartTime"))
            if start is not None:
                return start
    return None


def dimension_names(ds: Dataset) -> tuple[str, ...]:
    """The keyword each DimensionIndexValues position points at (e.g. TemporalPositionIndex)."""
    names = []
    for item in ds.get("DimensionIndexSequence") or []:
        pointer = item.get("DimensionIndexPointer")
        names.append(keyword_for_tag(int(pointer)) or str(pointer) if pointer is not None else "")
    return tuple(names)



def frame_pixels(ds: Dataset, frame_number: int | None, source: Path | None = None) -> np.ndarray:
    """One frame's stored values rescaled (HU for CT), with the frame's own Pixel Value Transformation.

    Decodes only that frame where the transfer syntax allows (pydicom's ``pixel_array`` for
    classic images, ``pydicom.pixels.pixel_array(..., index=)`` for multi-frame objects). With
    ``source`` (the file ``ds``'s header was read from, without its pixels) only that frame's
    bytes are read from disk: a check that looks at one frame of an instance of hundreds of MB,
    as the node's role check does, then costs one frame of memory, not the instance.
    """
    view = FrameView(ds, frame_number)
    index = None if frame_number is None else frame_number - 1
    if source is not None:
        plane = pixel_array(str(source), index=index)
    elif index is None:
        plane = ds.pixel_array
    else:
        plane = pixel_array(ds, index=index)
    slope = as_float(view.get("RescaleSlope", "PixelValueTransformationSequence"))
    intercept = as_float(view.get("RescaleIntercept", "PixelValueTransformationSequence"))
    values: np.ndarray = plane.astype(np.float32) * (1.0 if slope is None else slope) + (intercept or 0.0)
    return values
