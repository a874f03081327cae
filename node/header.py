"""Check the structure of an encoded data set and read its identifying attributes.

The C-STORE handler must not decode the data set (a quarter of the throughput, and a way for a
broken pixel module to fail a valid instance). It does walk every element header, with large
values skipped rather than copied, so that a truncated data set (an element longer than what
was received) is refused instead of being stored as if it were whole.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

# Values longer than this are skipped (seeked over), not read, during the structural walk.
_DEFER_BYTES = 1024


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
    except Exception:  # noqa: BLE001 - a malformed number is left out like malformed text
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
        stream = BytesIO(data)
        ds = read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian, defer_size=_DEFER_BYTES)
        end = stream.tell()
        # Force the conversion of what we read now, inside the error handling.
        header = _header_from(ds)
    except Exception as exc:  # any parser failure is "cannot understand"
        raise UnreadableDataset(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    if not len(ds):
        raise UnreadableDataset("the data set is empty")
    if end > len(data):
        raise UnreadableDataset(f"the data set is truncated ({end - len(data)} bytes missing)")
    return header


def read_file_header(path: Path) -> tuple[Header, str]:
    """Header and transfer syntax of a Part-10 file (start-up reconciliation)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        header = _header_from(ds)
    except Exception as exc:  # any parser failure is "cannot understand"
        raise UnreadableDataset(f"cannot parse {path.name}: {type(exc).__name__}: {exc}") from exc
    return header, str(ds.file_meta.get("TransferSyntaxUID", ""))
