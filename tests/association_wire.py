"""An association request made on a plain socket, its answer read off the wire.

pynetdicom's requestor sends the A-ASSOCIATE-RQ, then checks that its socket is still connected;
a node that answers with A-ASSOCIATE-RJ fast enough has had its rejection read, and the socket
closed by pynetdicom's own reading thread, before that check on a loaded machine, and the requestor
then calls the rejection an abort. Tests of how the node answers read the answer themselves.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.pdu_layout import PDU_HEADER

A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03


def associate_rq(calling: str, called: str = "TRIPHASE") -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing Verification."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.9999.1"
    primitive.user_information = [maximum, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


@dataclass
class Answer:
    """The first PDU the node sent back, and the connection it came on."""

    kind: int
    body: bytes
    sock: socket.socket

    @property
    def rejection(self) -> tuple[int, int, int] | None:
        """(result, source, reason/diagnostic) of an A-ASSOCIATE-RJ (PS3.8 9.3.4), else None."""
        if self.kind != A_ASSOCIATE_RJ:
            return None
        return self.body[1], self.body[2], self.body[3]


def _read_exact(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"the node closed the connection after {len(data)} of {count} bytes")
        data += chunk
    return data


def request_association(port: int, calling: str, called: str = "TRIPHASE", *, keep_open: bool = False,
                        timeout_s: float = 10.0) -> Answer:
    """Send an A-ASSOCIATE-RQ to the node on 127.0.0.1 and read its answer; the connection is closed
    afterwards unless ``keep_open`` (a peer that does not close after its answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    try:
        sock.sendall(associate_rq(calling, called))
        kind, length = PDU_HEADER.unpack(_read_exact(sock, PDU_HEADER.size))
        answer = Answer(kind, _read_exact(sock, length), sock)
    except BaseException:
        sock.close()
        raise
    if not keep_open:
        sock.close()
    return answer
