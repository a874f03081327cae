"""A C-STORE request's command set read by its tags, not decoded through pydicom.

pynetdicom decodes every command set into a pydicom ``Dataset`` (a reader, raw elements, value
conversion) before it copies the elements into the request primitive: about 0.15 ms of CPU per
C-STORE, spent on the few fixed elements of PS3.7 9.3.1.1. For the request a node receives
thousands of times an hour, :func:`decode_command_set` reads those elements itself and hands
pynetdicom a :class:`StoreCommandSet`, which its decoding and ``message_to_primitive`` use as they
use a ``Dataset`` (attributes by keyword, elements in tag order): each value still goes through the
primitive's own setter and its validation, so a bad UID or AE title meets the same check as before.

Anything else takes pynetdicom's path unchanged: another command, an element this reader does not
know, a value that is empty, multi-valued or of the wrong length, elements out of order, and any
association where someone listens for received DIMSE messages (``EVT_DIMSE_RECV``, whose handlers
are promised a ``Dataset``). Any other attribute asked of a :class:`StoreCommandSet` is answered by
the ``Dataset`` pynetdicom would have made, decoded then.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any, NamedTuple

from pydicom.dataset import Dataset
from pynetdicom import dimse_messages, evt
from pynetdicom.dsutils import decode as pynetdicom_decode
from pynetdicom.dul import DULServiceProvider

ELEMENT_HEADER = struct.Struct("<HHL")  # group, element, value length: implicit VR little endian
US = struct.Struct("<H")
UL = struct.Struct("<L")
C_STORE_RQ = 0x0001
NO_DATA_SET = 0x0101


class CommandElement(NamedTuple):
    """What pynetdicom reads of each element when it fills in the primitive."""

    tag: int
    keyword: str
    value: Any
    VM: int  # pydicom's name, which pynetdicom reads


def _uid(raw: bytes) -> str | None:
    value = raw.decode("latin-1").rstrip("\0 ")  # as pydicom's UI conversion
    return value if value and "\\" not in value else None


def _ae(raw: bytes) -> str | None:
    value = raw.decode("latin-1").strip()  # as pydicom's AE conversion
    return value if value and "\\" not in value else None


def _us(raw: bytes) -> int | None:
    return US.unpack(raw)[0] if len(raw) == US.size else None


def _ul(raw: bytes) -> int | None:
    return UL.unpack(raw)[0] if len(raw) == UL.size else None


# The elements of a C-STORE-RQ (PS3.7 table 9.3-1), by tag: keyword and how the value is read.
_ELEMENTS: dict[int, tuple[str, Callable[[bytes], Any]]] = {
    0x0000_0000: ("CommandGroupLength", _ul),
    0x0000_0002: ("AffectedSOPClassUID", _uid),
    0x0000_0100: ("CommandField", _us),
    0x0000_0110: ("MessageID", _us),
    0x0000_0700: ("Priority", _us),
    0x0000_0800: ("CommandDataSetType", _us),
    0x0000_1000: ("AffectedSOPInstanceUID", _uid),
    0x0000_1030: ("MoveOriginatorApplicationEntityTitle", _ae),
    0x0000_1031: ("MoveOriginatorMessageID", _us),
}
_REQUIRED = frozenset({"AffectedSOPClassUID", "CommandField", "MessageID", "Priority", "CommandDataSetType",
                       "AffectedSOPInstanceUID"})


class StoreCommandSet:
    """A C-STORE-RQ command set as pynetdicom reads a decoded one: its elements in tag order and
    each value by keyword; for anything more, the ``Dataset`` pynetdicom would have decoded."""

    def __init__(self, elements: list[CommandElement], encoded: bytes) -> None:
        self._elements = elements
        self._encoded = encoded
        self._dataset: Dataset | None = None
        for element in elements:
            self.__dict__[element.keyword] = element.value

    def __iter__(self) -> Iterator[CommandElement]:
        return iter(self._elements)

    def __getattr__(self, name: str) -> Any:  # only for names that are not an element's keyword
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset(), name)

    def dataset(self) -> Dataset:
        """The command set decoded by pynetdicom, as every other command set is."""
        if self._dataset is None:
            self._dataset = pynetdicom_decode(BytesIO(self._encoded), True, True)
        return self._dataset


def read_store_command(encoded: bytes) -> StoreCommandSet | None:
    """The command set of a C-STORE-RQ with a data set, or None for anything this reader leaves
    to pynetdicom."""
    elements: list[CommandElement] = []
    offset, end, last_tag = 0, len(encoded), -1
    while offset < end:
        if offset + ELEMENT_HEADER.size > end:
            return None
        group, number, length = ELEMENT_HEADER.unpack_from(encoded, offset)
        tag = group << 16 | number
        offset += ELEMENT_HEADER.size
        known = _ELEMENTS.get(tag)
        if known is None or tag <= last_tag or length == 0 or offset + length > end:
            return None
        keyword, read = known
        value = read(encoded[offset:offset + length])
        if value is None:
            return None
        elements.append(CommandElement(tag, keyword, value, 1))
        offset += length
        last_tag = tag
    found = {element.keyword: element.value for element in elements}
    if not _REQUIRED <= found.keys() or found["CommandField"] != C_STORE_RQ:
        return None
    if found["CommandDataSetType"] == NO_DATA_SET:
        return None
    return StoreCommandSet(elements, encoded)


def decode_command_set(bytestring: BytesIO, is_implicit_vr: bool, is_little_endian: bool,
                       deflated: bool = False) -> Dataset | StoreCommandSet:
    """Stands in for pynetdicom's ``decode`` in its DIMSE message module, which uses it for
    command sets only (always implicit VR little endian)."""
    if is_implicit_vr and is_little_endian and not deflated and _nobody_listens():
        command = read_store_command(bytestring.getvalue())
        if command is not None:
            return command
    return pynetdicom_decode(bytestring, is_implicit_vr, is_little_endian, deflated)


def _nobody_listens() -> bool:
    """On an association's DUL thread (where pynetdicom decodes), with no ``EVT_DIMSE_RECV``
    handler: nobody but pynetdicom itself sees the command set."""
    thread = threading.current_thread()
    return isinstance(thread, DULServiceProvider) and not thread.assoc.get_handlers(evt.EVT_DIMSE_RECV)


def install() -> None:
    """Make pynetdicom's DIMSE message decoding (a process-wide switch) read C-STORE requests here.

    pynetdicom looks ``decode`` up in its module's namespace, as it does ``NamedTemporaryFile``
    (:func:`node.intake.install`).
    """
    namespace = vars(dimse_messages)
    if namespace.get("decode") is pynetdicom_decode:
        namespace["decode"] = decode_command_set
