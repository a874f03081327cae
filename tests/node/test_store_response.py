"""The C-STORE response the node encodes itself is byte for byte pynetdicom's."""

from __future__ import annotations

import pytest
from pydicom.uid import CTImageStorage, SecondaryCaptureImageStorage, generate_uid
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from node.statuses import StoreStatus
from node.store_response import encode_command_set, store_response_pdata


def response(status: int, sop_class: str | None, sop_instance: str | None, message_id: int = 7) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_instance
    rsp.Status = status
    return rsp


def pynetdicom_bytes(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize("status", [StoreStatus.SUCCESS, StoreStatus.OUT_OF_RESOURCES_DISK, StoreStatus.INVALID_UID,
                                    StoreStatus.CANNOT_UNDERSTAND])
@pytest.mark.parametrize(("sop_class", "sop_instance"), [
    (CTImageStorage, generate_uid()),  # odd and even lengths, padded with NUL as UIDs are
    (SecondaryCaptureImageStorage, "1.2.3.4"),
    (CTImageStorage, "1.2.3.45"),
    (None, None),  # a request whose UIDs could not be read: the response leaves them out
])
def test_same_bytes_as_pynetdicom(status: int, sop_class: str | None, sop_instance: str | None) -> None:
    rsp = response(int(status), sop_class, sop_instance, message_id=65535)
    assert encode_command_set(rsp) == pynetdicom_bytes(rsp)


def test_one_last_command_fragment_on_the_context() -> None:
    rsp = response(0, CTImageStorage, "1.2.3.4")
    pdata = store_response_pdata(rsp, 5, 16384)
    assert pdata is not None
    [(context_id, value)] = pdata.presentation_data_value_list
    assert context_id == 5 and value[:1] == b"\x03" and value[1:] == pynetdicom_bytes(rsp)


def test_anything_more_is_left_to_pynetdicom() -> None:
    with_comment = response(int(StoreStatus.INVALID_UID), CTImageStorage, "1.2.3.4")
    with_comment.ErrorComment = "bad UID"
    assert store_response_pdata(with_comment, 1, 16384) is None
    assert store_response_pdata(C_STORE(), 1, 16384) is None  # a request, not a response
    assert store_response_pdata(response(0, CTImageStorage, "1.2.3.4"), 1, 64) is None  # over a tiny PDU
    assert store_response_pdata(object(), 1, 16384) is None
