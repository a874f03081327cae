"""A quick walk over the element headers of a plainly well-formed little-endian data set.

The C-STORE handler walks every element header of a received data set, so that a truncated one is
refused, and reads the few attributes that identify the instance (:mod:`node.header`). pydicom's
reader does that in about half a millisecond for a CT slice, most of it building objects for
elements nobody reads. This walk does the same reading with ``struct`` over a memory map and keeps
only the identifying elements, which pydicom then converts (so their values, character sets
included, are exactly what pydicom gives).

It is deliberately narrow: anything it does not recognise as plainly well formed (big endian, an
unknown VR, an element running past the end, an undefined length outside a sequence or
encapsulated pixel data, a data set whose first element suggests the other VR encoding, a group
0000 or 0002 element) makes it answer ``None``, and pydicom's reader decides instead, with its
heuristics and its error messages. ``tests/node/test_element_walk.py`` compares the two on every
data set pydicom ships and on truncated copies of them.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
Buffer = bytes | bytearray | memoryview | mmap.mmap
_TAG = struct.Struct("<HH")
_LENGTH = struct.Struct("<L")
_SHORT_LENGTH = struct.Struct("<H")
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_VRS = _LONG_VRS | frozenset({
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
    b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
})


class _NotPlain(Exception):
    """Something this walk leaves to pydicom's reader."""


class _Walk:
    """One walk over ``buffer[start:end]``, keeping the top-level elements whose tags are wanted."""

    def __init__(self, buffer: Buffer, implicit: bool, wanted: frozenset[int]) -> None:
        self.buffer = memoryview(buffer)
        self.implicit = implicit
        self.wanted = wanted
        self.found: dict[BaseTag, RawDataElement] = {}

    def data_set(self, pos: int, end: int, *, top: bool, in_item: bool = False) -> int:
        """Walk elements from ``pos``; returns where they end (after an item delimiter if in_item)."""
        previous = -1
        while pos < end:
            if pos + 8 > end:
                raise _NotPlain
            group, element = _TAG.unpack_from(self.buffer, pos)
            tag = group << 16 | element
            if tag == ITEM_END and in_item:
                return pos + 8
            if tag <= previous or group in (0x0000, 0x0002) or group == 0xFFFE:
                raise _NotPlain
            previous = tag
            pos = self._element(tag, pos, end, top=top)
        if in_item:
            raise _NotPlain  # an item of undefined length must end with its delimiter
        return pos

    def _element(self, tag: int, pos: int, end: int, *, top: bool) -> int:
        vr, length, header = self._header(pos, end)
        start = pos + header
        if length == UNDEFINED:
            return self._undefined(tag, vr, start, end)
        if start + length > end:
            raise _NotPlain  # truncated: pydicom's reader says so in its words
        if top and tag in self.wanted:
            if start + length > len(self.buffer):
                raise _NotPlain  # a head of the data set (node.header) that stops short of the value
            value = bytes(self.buffer[start:start + length])
            self.found[Tag(tag)] = RawDataElement(Tag(tag), None if self.implicit else vr.decode(), length, value,
                                             start, self.implicit, True)
        return start + length

    def _header(self, pos: int, end: int) -> tuple[bytes, int, int]:
        if self.implicit:
            return b"", _LENGTH.unpack_from(self.buffer, pos + 4)[0], 8
        vr = bytes(self.buffer[pos + 4:pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > end or bytes(self.buffer[pos + 6:pos + 8]) != b"\0\0":
                raise _NotPlain
            return vr, _LENGTH.unpack_from(self.buffer, pos + 8)[0], 12
        if vr not in _VRS:
            raise _NotPlain
        return vr, _SHORT_LENGTH.unpack_from(self.buffer, pos + 6)[0], 8

    def _undefined(self, tag: int, vr: bytes, start: int, end: int) -> int:
        """A value of undefined length: a sequence, or encapsulated pixel data."""
        if vr == b"SQ" or (self.implicit and _dictionary_vr(tag) == "SQ"):
            return self._items(start, end, data_sets=True)
        if not self.implicit and tag == PIXEL_DATA and vr in (b"OB", b"OW"):
            return self._items(start, end, data_sets=False)
        raise _NotPlain

    def _items(self, pos: int, end: int, *, data_sets: bool) -> int:
        """Items up to the sequence delimiter: data sets walked in turn, or pixel data fragments
        (of defined length) skipped. Returns where the delimiter ends."""
        while pos + 8 <= end:
            group, element = _TAG.unpack_from(self.buffer, pos)
            length = _LENGTH.unpack_from(self.buffer, pos + 4)[0]
            tag = group << 16 | element
            if tag == SEQUENCE_END:
                return pos + 8
            if tag != ITEM:
                raise _NotPlain
            if length == UNDEFINED:
                if not data_sets:
                    raise _NotPlain
                pos = self.data_set(pos + 8, end, top=False, in_item=True)
                continue
            if pos + 8 + length > end:
                raise _NotPlain
            if data_sets and self.data_set(pos + 8, pos + 8 + length, top=False) != pos + 8 + length:
                raise _NotPlain
            pos += 8 + length
        raise _NotPlain


def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _first_looks_explicit(buffer: Buffer, start: int, end: int) -> bool:
    """pydicom switches to explicit VR when an implicit data set's first element has VR-like bytes."""
    view = memoryview(buffer)
    return end - start >= 6 and 0x40 < view[start + 4] < 0x5B and 0x40 < view[start + 5] < 0x5B


def identifying_elements(buffer: Buffer, start: int, end: int, *, implicit: bool,
                         wanted: Iterable[int]) -> dict[BaseTag, RawDataElement] | None:
    """The wanted top-level elements of the little-endian data set in ``buffer[start:end]``, raw;
    None when the data set is not plainly well formed (or empty).

    ``buffer`` may stop short of ``end`` (the first bytes of a file, :mod:`node.header`): values
    that are skipped need not be there, and wherever the walk would read past the buffer it
    answers None, never a value cut short.
    """
    if end <= start or start + 8 > len(buffer) or (implicit and _first_looks_explicit(buffer, start, end)):
        return None
    walk = _Walk(buffer, implicit, frozenset(wanted))
    try:
        if walk.data_set(start, end, top=True) != end:
            return None
    except (_NotPlain, struct.error, IndexError):
        return None
    return walk.found


def as_dataset(found: dict[BaseTag, RawDataElement], implicit: bool) -> Dataset:
    """Raw elements as a pydicom Dataset, which converts their values on access."""
    ds = Dataset(dict(sorted(found.items())))
    ds.set_original_encoding(implicit, True)
    return ds
