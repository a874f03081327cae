"""The quick element walk reads what pydicom's reader reads, and leaves it everything else.

Every little-endian data set pydicom ships (with pydicom-data's), whole and cut short at several
places, goes through both the node's header reader (quick walk, pydicom as fall-back) and pydicom's
reader alone: the outcome (the identifying attributes, or a refusal) must be the same.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.uid import UID

from node.element_walk import identifying_elements
from node.header import (
    IDENTIFYING_TAGS,
    Header,
    UnreadableDataset,
    plain_header,
    read_received_header,
    read_stream_header,
)

MAX_BYTES = 4 * 1024 * 1024


def _part10(path: Path) -> tuple[int, str] | None:
    """Where the data set of a Part-10 file starts, and its transfer syntax; None if not usable."""
    data = path.read_bytes()
    if len(data) > MAX_BYTES or data[128:132] != b"DICM" or data[136:138] != b"UL":
        return None
    group_length = struct.unpack_from("<L", data, 140)[0]
    try:
        ts = UID(str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID))
    except Exception:  # noqa: BLE001 - a sample file pydicom itself cannot read is no comparison
        return None
    if not ts.is_little_endian or ts.is_deflated:
        return None
    return 144 + group_length, str(ts)


def _outcome(read: object) -> Header | str:
    try:
        return read()  # type: ignore[operator]
    except UnreadableDataset:
        return "refused"


def _both(path: Path, offset: int, ts: str) -> tuple[Header | str, Header | str]:
    """The node's reading (with no head in memory, and with heads of several lengths, which must
    all agree) and pydicom's."""
    size = path.stat().st_size - offset
    data = path.read_bytes()
    heads = {0, len(data), offset + 7, offset + 8, *random.Random(len(data)).sample(range(len(data) + 1), k=3)}
    outcomes = {length: _outcome(lambda length=length: read_received_header(
        lambda: path.open("rb"), offset, size, ts, head=data[:length])) for length in sorted(heads)}
    assert len({str(outcome) for outcome in outcomes.values()}) == 1, outcomes
    with path.open("rb") as handle:
        handle.seek(offset)
        theirs = _outcome(lambda: read_stream_header(handle, size, ts))
    return outcomes[0], theirs


SAMPLES = [Path(p) for p in sorted(set(get_testdata_files("*"))) if Path(p).is_file()]
USABLE = [(path, found) for path in SAMPLES if (found := _part10(path)) is not None]


def test_there_are_enough_samples() -> None:
    assert len(USABLE) >= 60


@pytest.mark.parametrize(("path", "found"), USABLE, ids=[p.name for p, _ in USABLE])
def test_whole_and_truncated_samples_read_the_same(path: Path, found: tuple[int, str], tmp_path: Path) -> None:
    offset, ts = found
    ours, theirs = _both(path, offset, ts)
    assert ours == theirs
    data = path.read_bytes()
    cuts = random.Random(path.name).sample(range(offset + 1, len(data)), k=min(6, len(data) - offset - 1))
    for cut in cuts:
        short = tmp_path / f"cut-{cut}.dcm"
        short.write_bytes(data[:cut])
        ours, theirs = _both(short, offset, ts)
        assert ours == theirs, f"cut at {cut}"


def test_the_quick_walk_takes_most_samples() -> None:
    """Otherwise it would be pydicom's reader doing the work under another name."""
    taken = 0
    for path, (offset, ts) in USABLE:
        data = path.read_bytes()
        taken += identifying_elements(data, offset, len(data), implicit=UID(ts).is_implicit_VR,
                                      wanted=IDENTIFYING_TAGS) is not None
    assert taken >= 0.6 * len(USABLE), f"{taken} of {len(USABLE)}"


def test_a_ct_slice_is_read_by_the_quick_walk(tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.factories import ct_dataset

    ds = ct_dataset(generate_uid(), generate_uid(), size=64)
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    offset, ts = _part10(path) or (0, "")
    data = path.read_bytes()
    quick = identifying_elements(data, offset, len(data), implicit=False, wanted=IDENTIFYING_TAGS)
    assert quick is not None
    header = plain_header(quick)
    assert header is not None and header.study_uid == ds.StudyInstanceUID and header.modality == "CT"
    assert _both(path, offset, ts)[0] == _both(path, offset, ts)[1]


@pytest.mark.parametrize(("charset", "patient_id", "series_number"), [
    (None, "PAT-1", "7"),
    ("ISO_IR 100", "Müller", " 12 "),
    ("ISO_IR 192", "Jäger-山田", "3"),
    ("ISO 2022 IR 87", "ﾔﾏﾀﾞ", "3"),  # escape sequences: pydicom decodes
    (None, "A\\B", "1"),  # two values where one is expected
    (None, "X", "1.0"),  # not an integer string
    ("ISO_IR 100\\ISO_IR 192", "PAT", "+4"),
])
def test_values_decode_as_pydicom_decodes_them(charset: str | None, patient_id: str, series_number: str,
                                               tmp_path: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.factories import ct_dataset

    ds = ct_dataset(generate_uid(), generate_uid(), size=16)
    if charset is not None:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    ds.PatientID = patient_id
    ds.SeriesDescription = patient_id
    ds.add_new(0x0020_0011, "IS", series_number)
    path = tmp_path / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    offset, ts = _part10(path) or (0, "")
    ours, theirs = _both(path, offset, ts)
    assert ours == theirs
    assert isinstance(ours, Header)
