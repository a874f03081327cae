"""The C-STORE response, encoded directly instead of through a pydicom Dataset.

pynetdicom builds every response as a pydicom Dataset, sets its group length and encodes it: about
0.5 ms of Python for the seven small elements of a C-STORE-RSP, once per received instance, on the
path between the node's decision and the sender hearing it. The command set is fixed by PS3.7
(Table 9.3-2, Implicit VR Little Endian per 6.3.1), so it is written here with ``struct``; a
response with anything more (an Error Comment, an Offending Element) goes through pynetdicom.
``tests/node/test_store_response.py`` checks the bytes against pynetdicom's own encoding.
"""

from __future__ import annotations

import struct

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHL")  # group, element, value length (Implicit VR Little Endian)
_US = struct.Struct("<H")
_UL = struct.Struct("<L")
_LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment (PS3.8 E.2)
_PDV_OVERHEAD = 6  # PDV item length and presentation context ID, message control header
# Status-related parameters that only pynetdicom encodes (PS3.7 C.4.2.1.1 to C.4.2.1.4)
_OPTIONAL = ("ErrorComment", "OffendingElement", "ErrorID", "AttributeIdentifierList")


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _uid(value: str) -> bytes:
    encoded = value.encode("ascii")
    return encoded + b"\0" if len(encoded) % 2 else encoded


def encode_command_set(rsp: C_STORE) -> bytes | None:
    """The response's command set, or None when it is not a plain C-STORE-RSP."""
    if rsp.MessageIDBeingRespondedTo is None or not isinstance(rsp.Status, int):
        return None
    if any(getattr(rsp, name, None) is not None for name in _OPTIONAL):
        return None
    elements = []
    if rsp.AffectedSOPClassUID:
        elements.append(_element(0x0002, _uid(str(rsp.AffectedSOPClassUID))))
    elements.append(_element(0x0100, _US.pack(C_STORE_RSP)))
    elements.append(_element(0x0120, _US.pack(rsp.MessageIDBeingRespondedTo)))
    elements.append(_element(0x0800, _US.pack(NO_DATA_SET)))
    elements.append(_element(0x0900, _US.pack(rsp.Status)))
    if rsp.AffectedSOPInstanceUID:
        elements.append(_element(0x1000, _uid(str(rsp.AffectedSOPInstanceUID))))
    body = b"".join(elements)
    return _element(0x0000, _UL.pack(len(body))) + body


def store_response_pdata(rsp: object, context_id: int, max_pdu: int) -> P_DATA | None:
    """The P-DATA carrying a plain C-STORE response in one fragment, or None for pynetdicom to send."""
    if not isinstance(rsp, C_STORE):
        return None
    command_set = encode_command_set(rsp)
    if command_set is None or (max_pdu and len(command_set) + _PDV_OVERHEAD > max_pdu):
        return None
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command_set))
    return pdata
