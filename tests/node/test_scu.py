"""How the node's own requests (write-back, echo, query) report a peer that will not associate."""

from __future__ import annotations

import pytest
from pynetdicom import AE
from pynetdicom._globals import MODE_REQUESTOR
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

from db.engine import Database
from node.scu import AssociationFailed, RemoteNode, _why_not, echo
from tests.node.conftest import NodeFactory


def test_a_rejection_says_so_with_its_reason(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database)
    remote = RemoteNode("TRIPHASE", "127.0.0.1", running.port)
    for _ in range(5):
        with pytest.raises(AssociationFailed) as failed:
            echo(remote, calling_ae="STRANGER", timeout_s=5)
        assert "rejected the association" in str(failed.value)
        assert "Calling AE title not recognised" in str(failed.value)


def test_a_rejection_pynetdicom_took_for_an_abort_is_reported_as_a_rejection() -> None:
    """pynetdicom's requestor aborts when its reading thread closed the socket on an answer it had
    already queued: the answer is read from the queue."""
    assoc = Association(AE(ae_title="TRIPHASE"), MODE_REQUESTOR)
    answer = A_ASSOCIATE()
    answer.result, answer.result_source, answer.diagnostic = 0x01, 0x01, 0x03
    assoc.dul.to_user_queue.put(answer)
    assoc.is_aborted = True
    why = _why_not(assoc, RemoteNode("PACS", "127.0.0.1", 1))
    assert "rejected the association" in why and "Calling AE title not recognised" in why
