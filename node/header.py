"""Check the structure of an encoded data set and read its identifying attributes.

The C-STORE handler must not decode the data set (a quarter of the throughput, and a way for a
broken pixel module to fail a valid instance). It does walk every element header, with large
values skipped rather than copied, so that a truncated data set (an element longer than what
was received) is refused instead of being stored as if it were whole.
"""

from __future__ import annotations

import mmap
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from node.element_walk import Buffer, as_dataset, identifying_elements

# Values longer than this are skipped (seeked over), not read, during the structural walk.
_DEFER_BYTES = 1024
# A deflated data set is inflated only this far to find its identifying attributes: a small step
# first, larger ones up to the cap. Its bytes are stored as received, never inflated, so a small
# stream that inflates to gigabytes (a "deflate bomb") costs at most the last step in memory.
INFLATE_STEPS = (64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
_READ_BYTES = 64 * 1024
_LAST_IDENTIFYING_TAG = 0x0020_0011  # Series Number; the UIDs and the rest come before it


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


_EMPTY = Header(None, None, None, None, None, None, None, None, None, None)


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


# Single-byte or UTF-8 character sets whose decoding needs no escape handling, as Python codecs
_PLAIN_CHARSETS = {b"": "latin_1", b"ISO_IR 6": "latin_1", b"ISO_IR 100": "latin_1", b"ISO_IR 192": "utf_8"}
_FIELDS = {  # Header field: (tag, decoded with the data set's character set)
    "sop_class_uid": (0x0008_0016, False), "sop_instance_uid": (0x0008_0018, False),
    "study_uid": (0x0020_000D, False), "series_uid": (0x0020_000E, False), "patient_id": (0x0010_0020, True),
    "accession_number": (0x0008_0050, True), "study_date": (0x0008_0020, False), "modality": (0x0008_0060, False),
    "series_description": (0x0008_103E, True),
}
_SERIES_NUMBER = 0x0020_0011
_SPECIFIC_CHARACTER_SET = 0x0008_0005  # how the text values decode
IDENTIFYING_TAGS = frozenset({tag for tag, _text in _FIELDS.values()} | {_SERIES_NUMBER, _SPECIFIC_CHARACTER_SET})
"""The elements a header is read from (the quick walk keeps these)."""


def plain_header(found: Mapping[BaseTag, RawDataElement]) -> Header | None:
    """The header from raw values that need no pydicom to decode (plain character set, one value
    each, a Series Number of digits); None leaves them to pydicom, which gives the same values."""
    charset = _raw(found, _SPECIFIC_CHARACTER_SET).strip(b" \0")
    codec = _PLAIN_CHARSETS.get(charset)
    if codec is None:
        return None
    values: dict[str, str | None] = {}
    for field, (tag, text) in _FIELDS.items():
        raw = _raw(found, tag)
        if b"\\" in raw:
            return None  # several values: pydicom's conversion decides what that means
        try:
            values[field] = raw.decode(codec if text else "latin_1").strip(" \0") or None
        except UnicodeDecodeError:
            return None
    number = _raw(found, _SERIES_NUMBER).strip(b" \0")
    if number and not number.lstrip(b"+-").isdigit():
        return None
    return Header(series_number=int(number) if number else None, **values)


def _raw(found: Mapping[BaseTag, RawDataElement], tag: int) -> bytes:
    element = found.get(BaseTag(tag))
    return element.value or b"" if element is not None else b""


def read_received_header(open_file: Callable[[], BinaryIO], offset: int, size: int, transfer_syntax: str,
                         head: Buffer = b"") -> Header:
    """The header of the ``size``-byte data set at ``offset`` in the file ``open_file`` opens.

    A plainly well-formed little-endian data set is walked (:mod:`node.element_walk`) over
    ``head``, the file's first bytes as they were written, when its element headers and the values
    read are all there (a CT or MR slice's are, its pixel data being skipped); otherwise over a
    memory map of the file, touching only the pages its element headers are on. Anything else,
    and every refusal, is pydicom's reader's (:func:`read_stream_header`). The file is opened only
    when the head does not suffice.
    """
    ts = UID(transfer_syntax)
    walkable = ts.is_little_endian and not ts.is_deflated and size > 0
    header = _walked(head, offset, offset + size, ts) if walkable else None
    if header is not None:
        return header
    with open_file() as handle:
        if walkable:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                header = _walked(mapped, offset, offset + size, ts) if offset + size <= len(mapped) else None
            if header is not None:
                return header
        handle.seek(offset)
        return read_stream_header(handle, size, transfer_syntax)


def _walked(buffer: Buffer, start: int, end: int, ts: UID) -> Header | None:
    """The header by the quick walk over ``buffer`` (:func:`identifying_elements`); None where
    the walk leaves the data set to pydicom's reader."""
    found = identifying_elements(buffer, start, end, implicit=ts.is_implicit_VR, wanted=IDENTIFYING_TAGS)
    if found is None:
        return None
    return plain_header(found) or _header_from(as_dataset(found, ts.is_implicit_VR))


def read_header(data: bytes, transfer_syntax: str) -> Header:
    """Parse the header of a data set encoded in ``transfer_syntax`` (no file meta)."""
    return read_stream_header(BytesIO(data), len(data), transfer_syntax)


def read_stream_header(stream: BinaryIO, size: int, transfer_syntax: str) -> Header:
    """Parse the header of the ``size`` bytes of a data set that start at ``stream``'s position.

    Large values are seeked over, so a data set on disk is never read whole; a deflated one is
    inflated only as far as :data:`INFLATE_STEPS` allows.
    """
    ts = UID(transfer_syntax)
    try:
        if ts == DeflatedExplicitVRLittleEndian:
            return _read_deflated(stream)
        start = stream.tell()
        ds = read_dataset(stream, ts.is_implicit_VR, ts.is_little_endian, defer_size=_DEFER_BYTES)
        end = stream.tell() - start
        # Force the conversion of what we read now, inside the error handling.
        header = _header_from(ds)
    except UnreadableDataset:
        raise
    except Exception as exc:  # any parser failure is "cannot understand"
        raise UnreadableDataset(f"cannot parse the data set: {type(exc).__name__}: {exc}") from exc
    if not len(ds):
        raise UnreadableDataset("the data set is empty")
    if end > size:
        raise UnreadableDataset(f"the data set is truncated ({end - size} bytes missing)")
    return header


def _inflate(stream: _Offset, limit: int) -> tuple[bytes, bool]:
    """The first ``limit`` inflated bytes of a raw deflate stream, and whether the stream ended."""
    stream.seek(0)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    while len(out) < limit and not inflater.eof:
        chunk = inflater.unconsumed_tail or stream.read(_READ_BYTES)
        if not chunk:
            break
        out += inflater.decompress(chunk, limit - len(out))
    if not inflater.eof and len(out) < limit:
        raise UnreadableDataset("the deflated data set is truncated")
    return bytes(out), inflater.eof


def _read_deflated(stream: BinaryIO) -> Header:
    """The header of a deflated data set, inflating no more than the last of :data:`INFLATE_STEPS`.

    Each step inflates from the start up to its size. A stream that ends within a step is walked
    like any other data set, so a truncated one is still refused; otherwise the step's prefix is
    read up to the last identifying attribute, and the next step tries again if one is missing.
    A data set larger than the cap is taken on the header found; its bytes are stored as received.
    """
    ts = UID(DeflatedExplicitVRLittleEndian)
    view = _Offset(stream, stream.tell())
    header = _EMPTY
    for limit in INFLATE_STEPS:
        inflated, ended = _inflate(view, limit)
        if ended:
            return read_stream_header(BytesIO(inflated), len(inflated), ExplicitVRLittleEndian)
        header = _header_from(_prefix(inflated, ts))
        if None not in (header.sop_class_uid, header.sop_instance_uid, header.study_uid, header.series_uid):
            return header
    return header


def _prefix(data: bytes, ts: UID) -> Dataset:
    """The elements at the start of a data set prefix, up to the Series Number (0020,0011)."""
    return read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian, defer_size=_DEFER_BYTES,
                        stop_when=lambda tag, _vr, _length: tag > _LAST_IDENTIFYING_TAG)


class _Offset:
    """``stream`` seen from ``origin``: the deflated data set after a file meta header."""

    def __init__(self, stream: BinaryIO, origin: int) -> None:
        self._stream = stream
        self._origin = origin

    def seek(self, offset: int) -> None:
        self._stream.seek(self._origin + offset)

    def read(self, count: int) -> bytes:
        return self._stream.read(count)


def read_file_header(path: Path) -> tuple[Header, str]:
    """Header and transfer syntax of a Part-10 file (start-up reconciliation)."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
        header = _header_from(ds)
    except Exception as exc:  # any parser failure is "cannot understand"
        raise UnreadableDataset(f"cannot parse {path.name}: {type(exc).__name__}: {exc}") from exc
    return header, str(ds.file_meta.get("TransferSyntaxUID", ""))
