"""One PDU off an association's socket, a P-DATA-TF already split into its fragments.

A 512 x 512 CT instance arrives as two or three P-DATA-TF PDUs of up to 256 KiB. pynetdicom copies
each body four times between the socket and the data set file; here the body is read once (the
door's socket reads it into one buffer) and each presentation data value is a ``memoryview`` of
it, which the DIMSE layer writes to the file or copies into the command set as it already does.
Used by :class:`node.wakeups.WakefulDUL` for established associations only.
"""

from __future__ import annotations

import logging
from typing import Protocol

from pynetdicom.pdu_primitives import P_DATA

from node.pdu_layout import P_DATA_TF, PDU_HEADER, PDU_TYPES, PDV_ITEM_HEADER, PDV_ITEM_LENGTH_SIZE

log = logging.getLogger(__name__)

EVENT_CONNECTION_CLOSED = "Evt17"  # pynetdicom's state machine events, as its DUL puts them
EVENT_INVALID_PDU = "Evt19"


class Readable(Protocol):
    def recv(self, nr_bytes: int) -> bytearray: ...


def read_pdu(sock: Readable) -> str | P_DATA | bytearray:
    """The next PDU: a P-DATA primitive for a P-DATA-TF, the whole encoded PDU for any other
    type, or the state machine event for a connection that closed mid-PDU (or timed out) or a PDU
    that is invalid (an unknown type, or a P-DATA-TF whose items do not add up)."""
    try:
        header = sock.recv(PDU_HEADER.size)
        if len(header) != PDU_HEADER.size:
            return EVENT_CONNECTION_CLOSED
        kind, length = PDU_HEADER.unpack(header)
        if kind not in PDU_TYPES:
            log.warning("received a PDU of unknown type 0x%02X", kind)
            return EVENT_INVALID_PDU
        body = sock.recv(length)
    except OSError:  # TimeoutError included: pynetdicom's reading treats both as a closed connection
        return EVENT_CONNECTION_CLOSED
    if len(body) != length:
        return EVENT_CONNECTION_CLOSED
    if kind != P_DATA_TF:
        return header + body
    values = fragments(body)
    if values is None:
        log.warning("received a P-DATA-TF PDU whose presentation data values do not add up")
        return EVENT_INVALID_PDU
    primitive = P_DATA()
    # The setter accepts bytes only; DIMSE reads a value's first byte and writes or copies the rest.
    primitive._presentation_data_value_list = values  # type: ignore[assignment]  # noqa: SLF001
    return primitive


def fragments(body: bytearray) -> list[tuple[int, memoryview]] | None:
    """(presentation context ID, message control header and fragment) for each item of a
    P-DATA-TF body, as views of it; None if an item is shorter than its two fixed bytes or runs
    past the end, or if there is none."""
    view = memoryview(body)
    values: list[tuple[int, memoryview]] = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + PDV_ITEM_HEADER.size > end:
            return None
        length, context_id = PDV_ITEM_HEADER.unpack_from(body, offset)
        item_end = offset + PDV_ITEM_LENGTH_SIZE + length
        if length < 2 or item_end > end:
            return None
        values.append((context_id, view[offset + PDV_ITEM_HEADER.size:item_end]))
        offset = item_end
    return values or None
