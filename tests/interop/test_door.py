"""dcmtk against the node process's door: stalled connections do not lock a sender out, TLS with
and without client certificates, and a probe does not delay SIGTERM."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.certificates import Pki, make_pki
from tests.conftest import free_port, require_tool
from tests.factories import write_study
from tests.node.test_door import closed_by_peer, stalled
from tests.processes import NodeProcess, Orthanc

pytestmark = pytest.mark.interop
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")
ARTIM = 5.0  # generous: two dcmtk processes start on a busy machine within it
PEERS = [{"name": "dcmtk", "ae_title": "STORESCU"}, {"name": "echo", "ae_title": "ECHOSCU"}]


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool(f"/usr/bin/{tool}")  # by path: a virtual environment puts pynetdicom's first
    return subprocess.run([binary, "-to", "10", "-ta", "10", "-td", "10", *args], capture_output=True, text=True,
                          timeout=30, env=DCMTK_ENV)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(("count", "distinct_sources"), [(16, False), (64, True)])
def test_dcmtk_gets_in_past_stalled_connections(tmp_path: Path, count: int, distinct_sources: bool) -> None:
    node = NodeProcess(tmp_path / "node", peers=PEERS, extra_node={"artim_timeout_s": ARTIM})
    _, files = write_study(tmp_path / "study", series=1, per_series=2)
    try:
        node.start()
        socks = stalled(node.port, count, distinct_sources=distinct_sources)
        opened = time.monotonic()
        ok = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(node.port))
        assert ok.returncode == 0, ok.stderr
        sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "TRIPHASE", "127.0.0.1", str(node.port),
                     *map(str, files))
        assert sent.returncode == 0, sent.stderr
        assert time.monotonic() - opened < ARTIM
        assert all(closed_by_peer(sock, opened + ARTIM + 1.0) for sock in socks)
        for sock in socks:
            sock.close()
    finally:
        node.kill()


def test_sigterm_is_not_delayed_by_a_probe(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", peers=PEERS, extra_node={"shutdown_grace_s": 10})
    node.start()
    try:
        probe = socket.create_connection(("127.0.0.1", node.port))
        time.sleep(0.3)
        started = time.monotonic()
        assert node.terminate() == 0
        assert time.monotonic() - started < 3.0
        probe.close()
    finally:
        node.kill()


def tls_only_node(folder: Path, pki: Pki, peers: list[dict[str, str]]) -> NodeProcess:
    """A node that listens with TLS alone and requires a client certificate from the test CA."""
    tls_port = free_port()
    tls = (f"[node.tls]\nport = {tls_port}\ncertificate = \"{pki.server_cert}\"\nprivate_key = \"{pki.server_key}\"\n"
           f"ca_certificates = \"{pki.ca}\"\nrequire_client_certificate = true\n")
    # TLS only: the process's port is the TLS listener's (a bare connect is how start() waits for it)
    return NodeProcess(folder, peers=peers, port=tls_port, extra_node={"plain": False}, extra_toml=tls)


@pytest.fixture
def tls_node(tmp_path: Path, pki: Pki) -> NodeProcess:
    return tls_only_node(tmp_path / "node", pki, PEERS)


def test_dcmtk_over_tls_with_a_client_certificate(tls_node: NodeProcess, pki: Pki, tmp_path: Path) -> None:
    _, files = write_study(tmp_path / "study", series=1, per_series=3)
    try:
        tls_node.start()
        tls = ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]
        ok = dcmtk("echoscu", *tls, "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(tls_node.port))
        assert ok.returncode == 0, ok.stderr
        sent = dcmtk("storescu", *tls, "-aet", "STORESCU", "-aec", "TRIPHASE", "127.0.0.1", str(tls_node.port),
                     *map(str, files))
        assert sent.returncode == 0, sent.stderr
        listing = tls_node.cli("studies", "--json")
        assert '"instances": 3' in listing.stdout
    finally:
        tls_node.kill()


def test_dcmtk_without_a_trusted_client_certificate_is_refused(tls_node: NodeProcess, pki: Pki) -> None:
    try:
        tls_node.start()
        anonymous = dcmtk("echoscu", "+tla", "+cf", str(pki.ca), "-aet", "ECHOSCU", "-aec", "TRIPHASE",
                          "127.0.0.1", str(tls_node.port))
        assert anonymous.returncode != 0
        stranger = dcmtk("echoscu", "+tls", str(pki.stranger_key), str(pki.stranger_cert), "+cf", str(pki.ca),
                         "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(tls_node.port))
        assert stranger.returncode != 0
        plain = dcmtk("echoscu", "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(tls_node.port))
        assert plain.returncode != 0
    finally:
        tls_node.terminate()
    assert "tls_failed" in tls_node.log()


def test_orthanc_sends_over_tls_with_a_client_certificate(orthanc_factory: Callable[..., Orthanc], pki: Pki,
                                                          tmp_path: Path) -> None:
    """Orthanc as the PACS pushes over DICOM TLS with its own client certificate; the same Orthanc
    without TLS towards the same port is refused."""
    node = tls_only_node(tmp_path / "node", pki, [*PEERS, {"name": "pacs", "ae_title": "ORTHANC"}])
    study_uid, files = write_study(tmp_path / "study", series=1, per_series=3)
    try:
        node.start()
        target = {"AET": "TRIPHASE", "Host": "127.0.0.1", "Port": node.port}
        orthanc = orthanc_factory(
            modalities={"node": {**target, "UseDicomTls": True}, "plain": target},
            extra_config={"DicomTlsEnabled": True, "DicomTlsCertificate": str(pki.client_cert),
                          "DicomTlsPrivateKey": str(pki.client_key), "DicomTlsTrustedCertificates": str(pki.ca),
                          "DicomTlsRemoteCertificateRequired": False})
        orthanc_study = orthanc.upload(files)
        orthanc.post("/modalities/node/echo", {})
        orthanc.post("/modalities/node/store", orthanc_study)
        listing = json.loads(node.cli("studies", "--json").stdout)
        assert [(s["study_uid"], s["instances"], s["calling_ae"]) for s in listing] == [(study_uid, 3, "ORTHANC")]
        with pytest.raises(urllib.error.HTTPError):
            orthanc.post("/modalities/plain/echo", {}, timeout=30)
    finally:
        node.terminate()
    assert "tls_failed" in node.log()
