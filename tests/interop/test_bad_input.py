"""Hostile and odd input against the node process: it stays up, and nothing is silently dropped."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pydicom
import pytest

from db.engine import Database
from db.queries import audit_events, instance_paths
from node.scu import RemoteNode, SendResult, echo, scan, send
from tests.processes import NodeProcess

pytestmark = pytest.mark.interop
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def test_every_pydicom_sample_is_stored_or_refused(node_process: NodeProcess) -> None:
    node_process.start()
    remote = RemoteNode("TRIPHASE", "127.0.0.1", node_process.port)
    result = SendResult()
    files = scan(sorted(p for p in TEST_FILES.iterdir() if p.is_file()), result)
    assert len(files) > 40
    send(files, remote, calling_ae="TESTER", result=result)
    assert echo(remote, calling_ae="TESTER") == 0  # still up

    database = Database(f"sqlite:///{node_process.data_dir / 'triphase.db'}")
    try:
        refused = audit_events(database, kind_prefix="instance.refused")
        stored_uids: dict[str, str] = {}
        n_ok = n_refused = 0
        for path, status in result.sent:
            if status == 0:
                n_ok += 1
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                stored_uids.update(instance_paths(database, ds.StudyInstanceUID))
                assert ds.SOPInstanceUID in stored_uids, path.name
                assert (node_process.data_dir / "spool" / stored_uids[ds.SOPInstanceUID]).is_file()
            else:
                n_refused += 1
                assert any(e.detail and e.detail.get("status") == f"0x{status:04X}" for e in refused), path.name
        # What the SCU could not even offer (no file meta, unsupported class) is reported, not lost.
        statuses = {p.name: s for p, s in result.sent}
        assert statuses["JPEGLSNearLossless_08.dcm"] == 0xC212  # no Study Instance UID in it
        assert statuses["MR_small_RLE.dcm"] == 0 and statuses["JPEG2000.dcm"] == 0  # compressed, as received
        assert n_ok > 30 and n_refused >= 1
        assert len(refused) == n_refused
    finally:
        database.close()
    spool = node_process.data_dir / "spool"
    assert not list((spool / ".tmp").iterdir())


def test_garbage_on_the_socket_does_not_hurt_the_node(node_process: NodeProcess) -> None:
    node_process.start()
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", os.urandom(4096), b"\x01\x00" + b"\xff" * 10):
        with socket.create_connection(("127.0.0.1", node_process.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(5)
            try:
                sock.recv(1024)
            except (TimeoutError, ConnectionResetError):
                pass
    assert echo(RemoteNode("TRIPHASE", "127.0.0.1", node_process.port), calling_ae="TESTER") == 0
