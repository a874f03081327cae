"""Read only the identifying attributes of an encoded data set, never its pixel data.

The C-STORE handler must not decode the whole data set (a quarter of the throughput, and a way for
a broken pixel module to fail a valid instance); parsing stops after Series Number (0020,0011).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom import dcmread
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

_LAST_TAG = Tag(0x0020, 0x0011)


class UnreadableDataset(ValueError):
    """The bytes are not a parsable DICOM data set."""


@dataclass(frozen=True)
class Header:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_uid: str | None
    series_uid: str | None
    patient_id: str | None
    accession_number: str | None
    study_date: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None


def _stop(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag > _LAST_TAG


def _text(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed optional attribute must not fail the instance
        return None
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:  # noqa: BLE001
        return None


def _header_from(ds: Dataset) -> Header:
    return Header(
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        patient_id=_text(ds, "PatientID"),
        accession_number=_text(ds, "AccessionNumber"),
        study_date=_text(ds, "StudyDate"),
        modality=_text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
    )


def read_header(data: bytes, transfer_syntax: str) -> Header:
    """Parse the header of a data set encoded in ``transfer_syntax`` (no file meta)."""
    ts = UID(transfer_syntax)
    try:
        if ts == DeflatedExplicitVRLittleEndian:
            data = zlib.decompress(data, -zlib.MAX_WBITS)
        ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian, stop_when=_stop)
        # Force the conversion of what we read now, inside the error handling.
        header = _header_from(ds)
    except Exception as exc:  # noqa: BLE001 - any parser failure is "cannot understand"
        raise UnreadableDataset(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    if not len(ds):
        raise UnreadableDataset("the data set is empty")
    return header


def read_file_header(path: Path) -> tuple[Header, str]:
    """Header and transfer syntax of a Part-10 file (start-up reconciliation)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        header = _header_from(ds)
    except Exception as exc:  # noqa: BLE001
        raise UnreadableDataset(f"cannot parse {path.name}: {type(exc).__name__}: {exc}") from exc
    return header, str(ds.file_meta.get("TransferSyntaxUID", ""))
