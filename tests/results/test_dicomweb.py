"""DICOMweb against a real Orthanc with Debian's DICOMweb plugin: STOW-RS of the SR and SCs, and
``triphase batch dicomweb`` (QIDO-RS + WADO-RS into the spool); failures classified on a stub server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import Database
from db.schema import OutboxEntry
from tests.conftest import free_port
from tests.factories import write_study
from tests.processes import NodeProcess
from worker.dicomweb import WebService
from worker.jobs import _destination
from worker.results.stow import WebDestination
from worker.results.writeback import send_to
from worker.retry import Attempt
from worker.settings import DestinationSettings

pytestmark = pytest.mark.interop


def test_stow_lands_in_the_source_study_in_orthanc(orthanc_factory, result_files) -> None:
    study_dir, files, study_uid = result_files
    orthanc = orthanc_factory(dicomweb=True)
    orthanc_study = orthanc.upload(sorted(study_dir.glob("*.dcm")))
    before = len(orthanc.get(f"/studies/{orthanc_study}/instances"))
    destination = WebDestination("web-pacs", WebService(orthanc.dicomweb_url, token="not-checked-by-orthanc"))
    outcome = send_to(destination, files, calling_ae="TRIPHASE")
    assert outcome.state == "sent" and outcome.attempts == 1, outcome.reason
    assert set(outcome.statuses.values()) == {"stored"} and len(outcome.statuses) == len(files)
    instances = orthanc.get(f"/studies/{orthanc_study}/instances")
    assert len(instances) == before + len(files)  # in the same study, no new study created
    modalities = sorted(orthanc.get(f"/instances/{i['ID']}/simplified-tags").get("Modality") for i in instances)
    assert "SR" in modalities
    # Deterministic UIDs: a repeat replaces, never duplicates.
    assert send_to(destination, files, calling_ae="TRIPHASE").state == "sent"
    assert len(orthanc.get(f"/studies/{orthanc_study}/instances")) == before + len(files)


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers every STOW-RS with the status the test chose, and remembers the request headers."""

    status = 503
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(dict(self.headers))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def stub_server() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Stub", (_Stub,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", handler
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("status", "transient"), [(503, True), (500, True), (429, True), (401, False),
                                                   (400, False)])
def test_http_failures_are_transient_or_permanent(stub_server, result_files, status: int, transient: bool) -> None:
    url, handler = stub_server
    handler.status = status
    _, files, _ = result_files
    destination = WebDestination("web", WebService(url, token="s3cret"))
    outcome = send_to(destination, files, calling_ae="TRIPHASE", attempt=Attempt(1, 3))
    assert outcome.state == "failed" and outcome.transient is transient, outcome.reason
    assert f"HTTP {status}" in (outcome.reason or "")
    assert ("permanent" in (outcome.reason or "")) is not transient
    assert "s3cret" not in json.dumps(outcome.as_json())
    assert handler.seen[-1]["Authorization"] == "Bearer s3cret"
    last = send_to(destination, files, calling_ae="TRIPHASE", attempt=Attempt(3, 3))
    assert transient is False or "gave up after 3 attempts" in (last.reason or "")


def test_unreachable_server_is_transient(result_files) -> None:
    _, files, _ = result_files
    outcome = send_to(WebDestination("web", WebService(f"http://127.0.0.1:{free_port()}/dicom-web")), files,
                      calling_ae="TRIPHASE")
    assert outcome.state == "failed" and outcome.transient


def test_dicomweb_destination_settings() -> None:
    made = _destination(DestinationSettings(name="cloud", kind="dicomweb", url="https://pacs.example/dicom-web",
                                            token="t0ken", tls_ca_file=Path("/etc/ssl/site-ca.pem")))
    assert isinstance(made, WebDestination)
    assert (made.service.url, made.service.token, made.service.ca_bundle) == (
        "https://pacs.example/dicom-web", "t0ken", "/etc/ssl/site-ca.pem")
    assert "t0ken" not in repr(made)
    with pytest.raises(ValueError, match="needs url"):
        DestinationSettings(name="cloud", kind="dicomweb")
    with pytest.raises(ValueError, match="needs ae_title, host and port"):
        DestinationSettings(name="pacs", host="10.0.0.1")


def test_config_show_masks_the_token(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "node", peers=[])
    node.extra_toml = ('[[worker.destinations]]\nname = "cloud"\nkind = "dicomweb"\n'
                       'url = "https://pacs.example/dicom-web"\ntoken = "t0ken-value"\n')
    node.write_config()
    shown = node.cli("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    [destination] = json.loads(shown.stdout)["worker"]["destinations"]
    assert destination["kind"] == "dicomweb" and destination["url"] == "https://pacs.example/dicom-web"
    assert destination["token"] != "t0ken-value" and "t0ken-value" not in shown.stdout


@pytest.mark.timeout(600)  # each `triphase batch` imports the pipeline (torch): slow on a busy machine
def test_batch_dicomweb_pulls_a_study_into_the_spool(orthanc_factory, tmp_path: Path) -> None:
    orthanc = orthanc_factory(dicomweb=True)
    first, files_a = write_study(tmp_path / "a", series=2, per_series=3)
    second, files_b = write_study(tmp_path / "b", series=1, per_series=2)
    orthanc.upload(files_a)
    orthanc.upload(files_b)
    node = NodeProcess(tmp_path / "node", peers=[])  # the command needs the configuration, not a running node
    node.write_config()
    dry = node.cli("batch", "dicomweb", "--url", orthanc.dicomweb_url, "--query", "ModalitiesInStudy=CT",
                   "--dry-run", "--json", timeout=240)
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert listed["matches"] == 2 and {row["study_uid"] for row in listed["studies"]} == {first, second}
    assert not (node.data_dir / "spool").exists() or not list((node.data_dir / "spool").rglob("*.dcm"))

    done = node.cli("batch", "dicomweb", "--url", orthanc.dicomweb_url, "--query", f"StudyInstanceUID={first}",
                    "--json", timeout=240)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["studies"]
    assert (row["study_uid"], row["retrieved"], row["stored"], row["queued"]) == (first, 6, 6, True)
    assert len(list((node.data_dir / "spool" / first).rglob("*.dcm"))) == 6
    assert not list((node.data_dir / "downloads").iterdir())  # the downloaded copies are gone
    listing = {s["study_uid"]: s for s in json.loads(node.cli("studies", "--json").stdout)}
    assert listing[first]["instances"] == 6 and listing[first]["state"] == "complete"
    assert second not in listing
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        with database.session() as s:
            assert s.scalars(select(OutboxEntry.queue)).all() == ["batch"]
    finally:
        database.close()
