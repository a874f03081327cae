"""The fixed byte layout of the DICOM upper layer's PDUs (PS3.8 9.3), as the node reads it.

The door (:mod:`node.door`) checks each PDU's header before pynetdicom sees it, and
:mod:`node.pdata` splits P-DATA-TF bodies itself; both read the same six-byte PDU header and the
same presentation data value items, so the layout is written down once, here.
"""

from __future__ import annotations

import struct

PDU_HEADER = struct.Struct(">BxL")  # PDU type, reserved, length of what follows
PDV_ITEM_HEADER = struct.Struct(">LB")  # item length, presentation context ID
PDV_ITEM_LENGTH_SIZE = 4  # an item's length counts what follows its own four bytes
A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
PDU_TYPES = frozenset(range(0x01, 0x08))  # A-ASSOCIATE-RQ up to A-ABORT
COMMAND_FRAGMENT = 0x01  # bit 0 of a fragment's message control header: a command, not a data set
