"""Write-back to a real Orthanc, and every failure path: down, refusing, timing out, rejecting."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.processes import NodeProcess
from worker.results.writeback import Destination, send_to, send_with_retries

pytestmark = pytest.mark.interop


def test_results_land_in_the_source_study_in_orthanc(orthanc_factory, result_files) -> None:
    study_dir, files, study_uid = result_files
    orthanc = orthanc_factory()
    source = sorted(p for p in study_dir.glob("*.dcm"))
    orthanc_study = orthanc.upload(source)
    before = len(orthanc.get(f"/studies/{orthanc_study}/instances"))
    destination = Destination("pacs", orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    outcome = send_to(destination, files, calling_ae="TRIPHASE")
    assert outcome.state == "sent" and outcome.attempts == 1, outcome.reason
    assert set(outcome.statuses.values()) == {"0x0000"}
    instances = orthanc.get(f"/studies/{orthanc_study}/instances")
    assert len(instances) == before + len(files)  # in the same study, no new study created
    modalities = {i["MainDicomTags"].get("SOPInstanceUID"): i for i in instances}
    sc = next(i for i in instances if i["ID"] and orthanc.get(f"/instances/{i['ID']}/simplified-tags").get("Modality")
              in ("OT", "SC") and "BurnedInAnnotation" in orthanc.get(f"/instances/{i['ID']}/simplified-tags"))
    with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http_port}/instances/{sc['ID']}/preview",
                                timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png" and response.read()[:4] == b"\x89PNG"
    assert len(modalities) == len(instances)
    # A retry replaces, it does not duplicate.
    again = send_to(destination, files, calling_ae="TRIPHASE")
    assert again.state == "sent"
    assert len(orthanc.get(f"/studies/{orthanc_study}/instances")) == before + len(files)
    assert len(orthanc.get("/studies")) == 1


def _no_sleep(calls: list[float]):  # type: ignore[no-untyped-def]
    return calls.append


def test_destination_down_is_retried_then_parked(result_files) -> None:
    _, files, _ = result_files
    delays: list[float] = []
    outcome = send_with_retries(Destination("pacs", "PACS", "127.0.0.1", free_port()), files, calling_ae="TRIPHASE",
                                timeout_s=3, backoff_s=(1.0, 2.0), sleep=_no_sleep(delays))
    assert outcome.state == "failed" and outcome.attempts == 3 and delays == [1.0, 2.0]
    assert "cannot reach" in (outcome.reason or "") and "gave up after 3 attempts" in (outcome.reason or "")


def test_destination_out_of_resources_is_retried_then_parked(result_files, tmp_path: Path) -> None:
    _, files, _ = result_files
    node = NodeProcess(tmp_path / "busy", peers=[{"name": "us", "ae_title": "TRIPHASE"}])
    node.extra_node = {"min_free_disk_mb": 10**9}
    node.start()
    try:
        delays: list[float] = []
        outcome = send_with_retries(Destination("busy", "TRIPHASE", "127.0.0.1", node.port), files,
                                    calling_ae="TRIPHASE", backoff_s=(0.5,), sleep=_no_sleep(delays))
    finally:
        node.kill()
    assert outcome.state == "failed" and outcome.attempts == 2
    assert set(outcome.statuses.values()) == {"0xA700"} and "0xA700" in (outcome.reason or "")


def test_rejected_association_is_permanent(result_files, tmp_path: Path) -> None:
    _, files, _ = result_files
    node = NodeProcess(tmp_path / "strict", peers=[{"name": "other", "ae_title": "SOMEONE"}])
    node.start()
    try:
        outcome = send_with_retries(Destination("strict", "TRIPHASE", "127.0.0.1", node.port), files,
                                    calling_ae="TRIPHASE", backoff_s=(0.5, 0.5), sleep=_no_sleep([]))
    finally:
        node.kill()
    assert outcome.state == "failed" and outcome.attempts == 1 and "permanent" in (outcome.reason or "")


def test_silent_destination_times_out_and_is_parked(result_files) -> None:
    _, files, _ = result_files
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:  # accept connections and say nothing
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    started = time.monotonic()
    try:
        outcome = send_with_retries(Destination("mute", "MUTE", "127.0.0.1", port), files, calling_ae="TRIPHASE",
                                    timeout_s=1.0, backoff_s=(0.1,), sleep=_no_sleep([]))
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()
    assert outcome.state == "failed" and outcome.attempts == 2
    assert time.monotonic() - started < 30


def test_shadow_destination_receives_nothing(result_files) -> None:
    _, files, _ = result_files
    outcome = send_to(Destination("shadow", "X", "127.0.0.1", free_port(), shadow=True), files, calling_ae="T")
    assert outcome.state == "shadowed" and outcome.attempts == 0


def test_tls_destination(result_files, tmp_path: Path) -> None:
    """Write-back over TLS: the server's certificate is verified against the configured CA."""
    import ssl
    import subprocess

    from node.folder_store import FolderStore

    _, files, _ = result_files
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    store = FolderStore(tmp_path / "tls-pacs").start(ssl_context=server_context)
    try:
        secure = Destination("tls", "DEMOPACS", "127.0.0.1", store.port, tls=True, tls_ca_file=str(cert))
        outcome = send_to(secure, files, calling_ae="TRIPHASE")
        assert outcome.state == "sent" and len(store.received) == len(files), outcome.reason
        untrusted = Destination("tls", "DEMOPACS", "127.0.0.1", store.port, tls=True)  # system CAs only
        refused = send_with_retries(untrusted, files, calling_ae="TRIPHASE", backoff_s=(), sleep=_no_sleep([]))
        assert refused.state == "failed"
    finally:
        store.stop()
