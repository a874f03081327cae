"""P-DATA-TF PDUs read straight into their fragments (node.pdata): the same messages as pynetdicom's
path, and a PDU whose items do not add up ends the association, never the node."""

from __future__ import annotations

import struct
import time

import pytest
from pydicom.uid import generate_uid
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from sqlalchemy import select

from db.engine import Database
from db.schema import Instance
from node.pdata import EVENT_CONNECTION_CLOSED, EVENT_INVALID_PDU, fragments, read_pdu
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory
from tests.node.test_limits import _associate, _results, _store_command
from tests.node.test_scp import encode_body, store


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">LBB", 2 + len(data), context_id, control) + data


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxL", kind, len(body)) + body


class Wire:
    """A socket stand-in: hands out what was 'sent', as the door's socket does, or raises."""

    def __init__(self, data: bytes, error: OSError | None = None) -> None:
        self.data, self.error = bytearray(data), error

    def recv(self, nr_bytes: int) -> bytearray:
        if self.error is not None:
            raise self.error
        out = self.data[:nr_bytes]
        del self.data[:nr_bytes]
        return out


def test_fragments_are_views_of_the_body_with_their_control_byte() -> None:
    body = bytearray(pdv(1, 0x03, b"command") + pdv(3, 0x00, b"data-1") + pdv(3, 0x02, b"data-2"))
    values = fragments(body)
    assert values is not None
    assert [(cid, bytes(data)) for cid, data in values] == [
        (1, b"\x03command"), (3, b"\x00data-1"), (3, b"\x02data-2")]
    assert all(data.obj is body for _, data in values)  # no copy


@pytest.mark.parametrize("body", [
    b"",  # no item
    struct.pack(">LB", 1, 1) + b"",  # shorter than its context ID and control byte
    struct.pack(">LBB", 100, 1, 0) + b"x" * 10,  # runs past the end
    pdv(1, 0x02, b"ok") + b"\x00\x00",  # a stray tail
])
def test_items_that_do_not_add_up_are_refused(body: bytes) -> None:
    assert fragments(bytearray(body)) is None


def test_read_pdu_gives_primitives_other_pdus_and_events() -> None:
    data = pdu(0x04, pdv(1, 0x02, b"last")) + pdu(0x05, b"\x00" * 4) + pdu(0x04, b"")
    wire = Wire(data)
    first = read_pdu(wire)
    assert isinstance(first, P_DATA)
    assert [(cid, bytes(value)) for cid, value in first.presentation_data_value_list] == [(1, b"\x02last")]
    assert read_pdu(wire) == bytearray(pdu(0x05, b"\x00" * 4))  # a release request, for pynetdicom to decode
    assert read_pdu(wire) == EVENT_INVALID_PDU  # a P-DATA-TF without items
    assert read_pdu(Wire(pdu(0x09, b"xx"))) == EVENT_INVALID_PDU  # no such PDU type
    assert read_pdu(Wire(pdu(0x04, pdv(1, 0x02, b"cut short"))[:-3])) == EVENT_CONNECTION_CLOSED
    assert read_pdu(Wire(b"\x04\x00")) == EVENT_CONNECTION_CLOSED
    assert read_pdu(Wire(b"", TimeoutError())) == EVENT_CONNECTION_CLOSED


def _answer(assoc: Association, raw: bytes) -> int:
    """Send ``raw`` (a whole C-STORE) and read the node's response, the requestor's reactor paused."""
    sock = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert sock is not None
    assoc._reactor_checkpoint.clear()
    try:
        while not assoc._is_paused:
            time.sleep(0.001)
        sock.sendall(raw)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None and rsp.Status is not None
    return int(rsp.Status)


def test_command_and_data_set_in_one_pdu_are_stored_as_sent(start_node: NodeFactory,
                                                             sqlite_database: Database) -> None:
    """Senders may put the command and several data set fragments in one P-DATA-TF."""
    running = start_node(sqlite_database)
    ds = ct_dataset(generate_uid(), generate_uid(), index=0, size=32)
    data = encode_body(ds)
    command_pdu = _store_command(ds.SOPInstanceUID)
    command = command_pdu[12:]  # the command set: after the PDU and PDV headers
    third = len(data) // 3
    raw = pdu(0x04, pdv(1, 0x03, command) + pdv(1, 0x00, data[:third]) + pdv(1, 0x00, data[third:2 * third])
              + pdv(1, 0x02, data[2 * third:]))
    assoc = _associate(running.port)
    assert assoc.is_established
    try:
        assert _answer(assoc, raw) == 0
    finally:
        assoc.release()
    with sqlite_database.session() as s:
        [row] = s.scalars(select(Instance))
    stored = running.spool.absolute(row.path).read_bytes()
    assert stored.endswith(data) and row.sop_instance_uid == ds.SOPInstanceUID


def test_a_pdu_whose_items_do_not_add_up_aborts_only_its_association(start_node: NodeFactory,
                                                                   sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    assoc = _associate(running.port)
    assert assoc.is_established
    sock = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert sock is not None
    sock.sendall(pdu(0x04, struct.pack(">LBB", 5000, 1, 0x02) + b"\x00" * 100))
    wait_until(lambda: _results(sqlite_database) == ["aborted"])
    wait_until(lambda: assoc.is_aborted or not assoc.is_alive())
    assert store(running.port, [ct_dataset(generate_uid(), generate_uid(), size=16)]) == [0]
