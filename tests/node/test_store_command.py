"""A C-STORE request's command set read directly (node/store_command.py) fills in the request
exactly as pynetdicom's decoding does, leaves everything unusual to pynetdicom, and is what a
node receiving C-STOREs uses, unless someone listens for received DIMSE messages."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import evt
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode

from db.engine import Database
from node import store_command
from node.store_command import StoreCommandSet, read_store_command
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory
from tests.node.test_scp import scu

FIELDS = ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
          "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")


def encoded_request(*, move: bool = False, sop_instance: str = "1.2.826.0.1.3680043.8.498.1234567",
                    message_id: int = 7, priority: int = 2) -> bytes:
    """A C-STORE-RQ command set as a peer (here pynetdicom) encodes it."""
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = sop_instance
    request.Priority = priority
    if move:
        request.MoveOriginatorApplicationEntityTitle = "PACS"
        request.MoveOriginatorMessageID = 3
    request.DataSet = BytesIO(b"\x08\x00\x16\x00" + b"x" * 10)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    [command, *_] = message.encode_msg(1, 16384)
    [(_context, value)] = command.presentation_data_value_list
    assert value[0] == 0x03  # the whole command set in one last fragment
    return bytes(value[1:])


def primitive_from(encoded: bytes, *, direct: bool, monkeypatch: pytest.MonkeyPatch) -> C_STORE:
    """The request primitive pynetdicom's DIMSE layer makes of the command set, decoding it itself
    or with the direct reader."""
    if direct:
        monkeypatch.setattr(store_command, "_nobody_listens", lambda: True)
        monkeypatch.setitem(vars(store_command.dimse_messages), "decode", store_command.decode_command_set)
    message = DIMSEMessage()
    message.encoded_command_set.write(encoded)
    message.context_id = 1
    message.command_set = store_command.dimse_messages.decode(message.encoded_command_set, True, True)
    message.__class__ = C_STORE_RQ
    assert isinstance(message.command_set, StoreCommandSet) is direct
    primitive = message.message_to_primitive()
    assert isinstance(primitive, C_STORE)
    return primitive


@pytest.mark.parametrize("move", [False, True])
@pytest.mark.parametrize("sop_instance", ["1.2.3.4", "1.2.3.45", generate_uid()])  # even, odd (NUL-padded)
def test_the_request_is_pynetdicoms(move: bool, sop_instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = encoded_request(move=move, sop_instance=sop_instance, message_id=65535, priority=1)
    theirs = primitive_from(encoded, direct=False, monkeypatch=monkeypatch)
    ours = primitive_from(encoded, direct=True, monkeypatch=monkeypatch)
    for field in FIELDS:
        assert getattr(ours, field) == getattr(theirs, field), field
        assert type(getattr(ours, field)) is type(getattr(theirs, field)), field
    assert ours.AffectedSOPInstanceUID == sop_instance


def test_other_attributes_come_from_pynetdicoms_dataset() -> None:
    command = read_store_command(encoded_request())
    assert command is not None
    assert command.CommandField == 0x0001 and command.CommandDataSetType != 0x0101
    assert isinstance(command.dataset(), Dataset)
    assert command.dataset().AffectedSOPClassUID == CTImageStorage
    assert command.get("Priority") == 2  # a Dataset method, answered by the decoded Dataset
    with pytest.raises(AttributeError):
        command.NoSuchKeyword  # noqa: B018


def _elements(encoded: bytes) -> list[tuple[int, int, bytes]]:
    found, offset = [], 0
    while offset < len(encoded):
        group, number, length = struct.unpack_from("<HHL", encoded, offset)
        found.append((group, number, encoded[offset + 8:offset + 8 + length]))
        offset += 8 + length
    return found


def _encode(elements: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(struct.pack("<HHL", group, number, len(value)) + value for group, number, value in elements)


def _replaced(number: int, value: bytes) -> bytes:
    return _encode([(g, n, value if n == number else v) for g, n, v in _elements(encoded_request())])


def _echo() -> bytes:
    request = C_ECHO()
    request.MessageID = 1
    request.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(request)
    [command] = message.encode_msg(1, 16384)
    return bytes(command.presentation_data_value_list[0][1][1:])


@pytest.mark.parametrize(("case", "encoded"), [
    ("a C-ECHO", _echo()),
    ("no data set", _replaced(0x0800, b"\x01\x01")),
    ("an empty UID", _replaced(0x1000, b"")),
    ("a multi-valued UID", _replaced(0x1000, b"1.2.3\\1.2.4\x00")),
    ("a US of three bytes", _replaced(0x0110, b"\x07\x00\x00")),
    ("an element it does not know", _encode([*_elements(encoded_request()), (0x0000, 0x0902, b"hello ")])),
    ("elements out of order", _encode(list(reversed(_elements(encoded_request()))))),
    ("a required element missing", _encode([e for e in _elements(encoded_request()) if e[1] != 0x0700])),
    ("a value past the end", encoded_request()[:-3]),
    ("half an element header", encoded_request() + b"\x00\x00\x00"),
])
def test_anything_unusual_is_left_to_pynetdicom(case: str, encoded: bytes) -> None:
    assert read_store_command(encoded) is None, case
    decoded = store_command.decode_command_set(BytesIO(encoded), True, True) if case == "a C-ECHO" else None
    assert decoded is None or isinstance(decoded, Dataset)


def test_off_an_association_thread_pynetdicom_decodes() -> None:
    """``decode`` off a DUL thread (nothing to ask about listeners) is pynetdicom's own."""
    decoded = store_command.decode_command_set(BytesIO(encoded_request()), True, True)
    assert isinstance(decoded, Dataset)
    assert decoded == decode(BytesIO(encoded_request()), True, True)


def test_a_node_reads_store_commands_directly_unless_someone_listens(
        start_node: NodeFactory, sqlite_database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    running = start_node(sqlite_database)
    assert vars(store_command.dimse_messages)["decode"] is store_command.decode_command_set
    seen: list[bool] = []  # for each C-STORE request decoded (the requestor's responses are left out)
    real = store_command.decode_command_set

    def spy(bytestring: BytesIO, *args: bool) -> object:
        decoded = real(bytestring, *args)
        if decoded.CommandField == 0x0001:
            seen.append(isinstance(decoded, StoreCommandSet))
        return decoded

    monkeypatch.setitem(vars(store_command.dimse_messages), "decode", spy)
    ae = scu()
    assoc = ae.associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    try:
        ds = ct_dataset(generate_uid(), generate_uid(), size=16)
        assert int(assoc.send_c_store(ds, originator_aet="PACS", originator_id=9).Status) == 0
    finally:
        assoc.release()
    assert seen == [True]

    received: list[object] = []

    def listen(event: evt.Event) -> None:
        received.append(event.message.command_set)

    seen.clear()
    assoc = ae.associate("127.0.0.1", running.port, ae_title="TRIPHASE")
    assert assoc.is_established
    try:
        wait_until(lambda: bool(running.node.ae.active_associations))
        for served in running.node.ae.active_associations:
            served.bind(evt.EVT_DIMSE_RECV, listen)
        ds = ct_dataset(generate_uid(), generate_uid(), size=16)
        assert int(assoc.send_c_store(ds).Status) == 0
    finally:
        assoc.release()
    assert seen == [False]
    assert len(received) == 1 and isinstance(received[0], Dataset)
