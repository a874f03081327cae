"""The door under hostile connections, with real sockets: stalled requests, probes, floods, huge
PDUs, per-address and association limits, TLS."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from db.engine import Database
from db.queries import audit_events
from db.schema import Association
from node.gate import ConnectionGate, ConnectionState, DoorLog, GateLimits
from node.scu import AssociationFailed, RemoteNode, client_tls_context, echo
from node.settings import NodeTlsSettings
from tests.association_wire import request_association
from tests.certificates import Pki, make_pki
from tests.concurrency import wait_until
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory, RunningNode
from tests.processes import rss_bytes

ARTIM = 2.0
# The first 10 bytes of an A-ASSOCIATE-RQ (type, reserved, length 205, protocol version, reserved)
PARTIAL_RQ = b"\x01\x00\x00\x00\x00\xcd\x00\x01\x00\x00"


def scu(calling: str = "PACS") -> AE:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    return ae


def stalled(port: int, count: int, *, distinct_sources: bool = False) -> list[socket.socket]:
    """Connections that send the start of an A-ASSOCIATE-RQ and then nothing."""
    socks = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if distinct_sources:  # all of 127/8 is loopback on Linux
            sock.bind((f"127.0.{i // 250}.{2 + i % 250}", 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(PARTIAL_RQ)
        socks.append(sock)
    return socks


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """Whether the node closed this connection before ``deadline`` (it never sends us data)."""
    try:
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def echo_and_store(port: int) -> None:
    assoc = scu().associate("127.0.0.1", port, ae_title="TRIPHASE")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(ct_dataset(generate_uid(), generate_uid())).Status == 0
    finally:
        assoc.release()


def door_audit(running: RunningNode) -> dict[str, int]:
    """Counts of door events over all audit rows (after flushing the aggregation)."""
    assert running.node.door is not None
    running.node.door.gate.events.flush()
    totals: dict[str, int] = {}
    for event in audit_events(running.database, kind_prefix="connection.refused"):
        for key, value in (event.detail or {}).items():
            if key != "address":
                totals[key] = totals.get(key, 0) + int(value)
    return totals


@pytest.fixture
def node(start_node: NodeFactory, sqlite_database: Database) -> RunningNode:
    return start_node(sqlite_database, artim_timeout_s=ARTIM)


@pytest.mark.parametrize(("count", "distinct_sources"), [(16, False), (64, True)])
def test_stalled_requests_do_not_lock_out_a_peer(node: RunningNode, count: int, distinct_sources: bool) -> None:
    socks = stalled(node.port, count, distinct_sources=distinct_sources)
    opened = time.monotonic()
    try:
        echo_and_store(node.port)
        assert time.monotonic() - opened < ARTIM  # at once, not after the stalled ones expired
        deadline = opened + ARTIM + 1.0
        assert all(closed_by_peer(sock, deadline) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    counts = door_audit(node)
    assert counts.get("evicted", 0) + counts.get("expired", 0) >= count
    rows = audit_events(node.database, kind_prefix="connection.refused")
    assert len(rows) <= (count if distinct_sources else 1)  # aggregated: one row per address


def test_bare_probe_is_closed_after_artim_and_does_not_delay_shutdown(node: RunningNode) -> None:
    probe = socket.create_connection(("127.0.0.1", node.port))
    late_probe = socket.create_connection(("127.0.0.1", node.port))
    try:
        assert closed_by_peer(probe, time.monotonic() + ARTIM + 1.0)
        started = time.monotonic()
        node.node.shutdown(grace_s=10)
        assert time.monotonic() - started < 2.0
        assert closed_by_peer(late_probe, time.monotonic() + 0.5)
    finally:
        probe.close()
        late_probe.close()


def test_max_associations_counts_negotiated_associations_only(start_node: NodeFactory,
                                                              sqlite_database: Database) -> None:
    running = start_node(sqlite_database, artim_timeout_s=ARTIM, max_associations=1)
    socks = stalled(running.port, 8, distinct_sources=True)
    try:
        first = scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE")
        assert first.is_established
        assert request_association(running.port, "PACS").rejection == (0x02, 0x03, 0x02)
        first.release()
        wait_until(lambda: running.node.door is not None and running.node.door.open_associations() == 0)
        echo_and_store(running.port)
    finally:
        for sock in socks:
            sock.close()
    [event] = audit_events(sqlite_database, kind_prefix="association.rejected")
    assert "max_associations" in event.message


def test_one_address_cannot_hold_more_than_its_share(start_node: NodeFactory, sqlite_database: Database) -> None:
    running = start_node(sqlite_database, artim_timeout_s=ARTIM, max_per_address=2)
    open_ = [scu().associate("127.0.0.1", running.port, ae_title="TRIPHASE") for _ in range(2)]
    try:
        assert all(a.is_established for a in open_)
        extra = socket.create_connection(("127.0.0.1", running.port))
        assert closed_by_peer(extra, time.monotonic() + 1.0)  # refused at once, not after ARTIM
        extra.close()
        other = socket.socket()
        other.bind(("127.0.0.7", 0))
        other.connect(("127.0.0.1", running.port))
        assert not closed_by_peer(other, time.monotonic() + 0.5)  # another address is not affected
        other.close()
    finally:
        for assoc in open_:
            assoc.release()
    assert door_audit(running).get("address_limit") == 1


def rejected_and_held(port: int, calling: str, called: str) -> socket.socket:
    """A connection that reads its A-ASSOCIATE-RJ and stays open."""
    answer = request_association(port, calling, called, keep_open=True)
    assert answer.rejection is not None, answer.kind
    return answer.sock


@pytest.mark.parametrize(("calling", "called", "reason"), [
    ("STRANGER", "TRIPHASE", (0x01, 0x01, 0x03)),  # rejected by the node's peer check
    ("PACS", "NOTUS", (0x01, 0x01, 0x07)),  # rejected by pynetdicom's negotiation
])
def test_a_peer_retrying_after_rejections_is_rejected_again_not_cut(
        start_node: NodeFactory, sqlite_database: Database, calling: str, called: str,
        reason: tuple[int, int, int]) -> None:
    """Rejected connections whose peer has not closed yet give way to the next arrival from their
    address: it gets its A-ASSOCIATE-RJ, instead of a connection cut for the address limit."""
    running = start_node(sqlite_database, artim_timeout_s=ARTIM, max_per_address=2, max_pending=4)
    held = [rejected_and_held(running.port, calling, called) for _ in range(2)]
    try:
        assert request_association(running.port, calling, called).rejection == reason
        held += [rejected_and_held(running.port, calling, called) for _ in range(6)]  # the pool is bounded
        assert closed_by_peer(held[0], time.monotonic() + 1.0)  # the oldest gave way
        assert running.node.door is not None
        wait_until(lambda: running.node.door is not None and running.node.door.gate.from_address("127.0.0.1") <= 2)
        echo_and_store(running.port)  # a configured peer is still served
    finally:
        for sock in held:
            sock.close()
    assert "address_limit" not in door_audit(running)


def test_a_rejected_connection_gives_way_before_a_pending_one() -> None:
    gate = ConnectionGate(GateLimits(max_associations=4, max_pending=2, max_per_address=8, artim_timeout_s=10),
                          DoorLog(_NoAudit()))
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        pending = gate.admit(pairs[0][0], "127.0.0.1", 1, tls=False)
        rejected = gate.admit(pairs[1][0], "127.0.0.1", 2, tls=False)
        assert pending is not None and rejected is not None
        gate.requested(rejected)
        gate.rejected(rejected)
        assert not gate.negotiate(rejected)  # rejected stays rejected
        newcomer = gate.admit(pairs[2][0], "127.0.0.1", 3, tls=False)
        assert newcomer is not None
        assert gate.count(ConnectionState.PENDING) == 2  # the rejected one was dropped, not the pending
        assert gate.count(ConnectionState.REJECTED) == 0
        pairs[1][1].settimeout(1)
        assert pairs[1][1].recv(1) == b""  # and its connection cut
    finally:
        for a, b in pairs:
            a.close()
            b.close()


class _NoAudit:
    def audit(self, kind: str, message: str = "", **_: object) -> None:
        pass


def test_oversized_pdata_is_aborted_before_its_body(node: RunningNode) -> None:
    assoc = scu().associate("127.0.0.1", node.port, ae_title="TRIPHASE")
    assert assoc.is_established
    before = rss_bytes()
    raw = assoc.dul.socket.socket  # type: ignore[union-attr]
    assert raw is not None
    raw.settimeout(2)
    try:
        raw.sendall(struct.pack(">BxL", 0x04, 100 * 1024 * 1024) + b"\x00" * (4 * 1024 * 1024))
    except OSError:
        pass  # the node may have closed the connection while we were still sending
    wait_until(lambda: assoc.is_aborted or not assoc.is_alive(), timeout=5)
    assert rss_bytes() - before < 50 * 1024 * 1024
    assert door_audit(node).get("pdu_too_large") == 1
    wait_until(lambda: _results(node.database) == ["aborted"], timeout=5)


def test_oversized_association_request_is_aborted(node: RunningNode) -> None:
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(struct.pack(">BxL", 0x01, 10 * 1024 * 1024) + b"\x00" * 1024)
        sock.settimeout(2)
        reply = sock.recv(64)
        assert reply[:1] == b"\x07"  # A-ABORT
        assert closed_by_peer(sock, time.monotonic() + 1.0)
    assert door_audit(node).get("request_too_large") == 1


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, *, require: bool = True) -> NodeTlsSettings:
    return NodeTlsSettings(port=0, certificate=pki.server_cert, private_key=pki.server_key,
                           ca_certificates=pki.ca, require_client_certificate=require)


def tls_echo(running: RunningNode, pki: Pki, cert: Path | None, key: Path | None) -> int:
    assert running.node.tls_port is not None
    context = client_tls_context(ca_file=str(pki.ca), cert_file=str(cert) if cert else None,
                                 key_file=str(key) if key else None)
    return echo(RemoteNode("TRIPHASE", "127.0.0.1", running.node.tls_port), calling_ae="PACS", timeout_s=5,
                tls=context)


@pytest.fixture
def tls_node(start_node: NodeFactory, sqlite_database: Database, pki: Pki) -> Iterator[RunningNode]:
    yield start_node(sqlite_database, artim_timeout_s=ARTIM, tls=tls_settings(pki))


def test_tls_with_a_trusted_client_certificate(tls_node: RunningNode, pki: Pki) -> None:
    assert tls_echo(tls_node, pki, pki.client_cert, pki.client_key) == 0
    echo_and_store(tls_node.port)  # the plain listener is still there


@pytest.mark.parametrize("client", ["none", "stranger"])
def test_tls_refuses_a_missing_or_untrusted_client_certificate(tls_node: RunningNode, pki: Pki,
                                                               client: str) -> None:
    cert, key = (pki.stranger_cert, pki.stranger_key) if client == "stranger" else (None, None)
    with pytest.raises((AssociationFailed, OSError)):
        tls_echo(tls_node, pki, cert, key)
    # With TLS 1.3 the client may see the server's alert before the node's handshake thread has
    # noted the failure: wait for the note, once.
    wait_until(lambda: door_audit(tls_node).get("tls_failed", 0) >= 1)
    assert door_audit(tls_node).get("tls_failed") == 1


def test_stalled_tls_handshakes_do_not_block_the_accept_loop(tls_node: RunningNode, pki: Pki) -> None:
    assert tls_node.node.tls_port is not None
    socks = [socket.create_connection(("127.0.0.1", tls_node.node.tls_port)) for _ in range(5)]
    try:
        started = time.monotonic()
        assert tls_echo(tls_node, pki, pki.client_cert, pki.client_key) == 0
        assert time.monotonic() - started < ARTIM
        assert all(closed_by_peer(sock, started + ARTIM + 1.0) for sock in socks)
    finally:
        for sock in socks:
            sock.close()


def test_tls_only(start_node: NodeFactory, sqlite_database: Database, pki: Pki) -> None:
    running = start_node(sqlite_database, plain=False, tls=tls_settings(pki, require=False))
    assert running.node.door is not None and [listener.tls for listener in running.node.door.listeners] == [True]
    assert tls_echo(running, pki, None, None) == 0
    with pytest.raises(ssl.SSLError):  # a plain client gets a TLS alert, not a DICOM answer
        raw = socket.create_connection(("127.0.0.1", running.port))
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.wrap_socket(raw, server_hostname="wrong.example").close()


# --- helpers -------------------------------------------------------------------------------------


def _results(database: Database) -> list[str]:
    with database.session() as session:
        return [a.result for a in session.query(Association)]


def test_shutdown_gives_open_associations_their_grace(node: RunningNode) -> None:
    assoc = scu().associate("127.0.0.1", node.port, ae_title="TRIPHASE")
    assert assoc.is_established
    stopper = threading.Thread(target=node.node.shutdown, kwargs={"grace_s": 5})
    stopper.start()
    time.sleep(0.3)
    assert stopper.is_alive()  # waiting for the association, not for probes
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    stopper.join(timeout=5)
    assert not stopper.is_alive()


def test_associations_share_the_listeners_contexts_and_negotiation_leaves_them_as_they_were(
        start_node: NodeFactory, sqlite_database: Database) -> None:
    """Each association gets a list of the listener's context objects, not a deep copy (64 ms of
    CPU per association): negotiating with roles and many transfer syntaxes must not change them."""
    running = start_node(sqlite_database)
    assert running.node.door is not None
    [server] = running.node.door._servers

    def snapshot() -> list[tuple[object, ...]]:
        contexts: list[PresentationContext] = server.contexts
        return [(cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role, cx.context_id, cx.result,
                 cx.as_scu, cx.as_scp) for cx in contexts]

    before = snapshot()
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.4.50", ExplicitVRLittleEndian, "1.2.3.4"])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="TRIPHASE",
                         ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)])
    assert assoc.is_established
    assert assoc.send_c_store(ct_dataset(generate_uid(), generate_uid(), size=16)).Status == 0
    assoc.release()
    echo_and_store(running.port)
    assert snapshot() == before
