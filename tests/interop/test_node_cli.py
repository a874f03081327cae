"""The node's commands as users type them: studies, studies complete, SIGTERM, exit codes."""

from __future__ import annotations

import json
import stat
import time
import tomllib
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from node.scu import RemoteNode, SendResult, scan, send
from tests.factories import ct_dataset, write_study
from tests.processes import NodeProcess

pytestmark = pytest.mark.interop


def test_studies_listing_and_forced_completion(node_process: NodeProcess, tmp_path: Path) -> None:
    node_process.extra_node = {"quiet_period_s": 3600}
    node_process.start()
    study_uid, _ = write_study(tmp_path / "study", series=2, per_series=2)
    result = SendResult()
    send(scan([tmp_path / "study"], result), RemoteNode("TRIPHASE", "127.0.0.1", node_process.port),
         calling_ae="TESTER", result=result)
    assert result.ok and len(result.sent) == 4
    [row] = json.loads(node_process.cli("studies", "--json").stdout)
    assert (row["study_uid"], row["state"], row["series"], row["instances"]) == (study_uid, "receiving", 2, 4)
    done = node_process.cli("studies", "complete", study_uid)
    assert done.returncode == 0 and "job #1 ready" in done.stdout
    again = node_process.cli("studies", "complete", study_uid)
    assert again.returncode == 0 and "already complete" in again.stdout
    missing = node_process.cli("studies", "complete", "1.2.3.4")
    assert missing.returncode == 1 and "no study" in missing.stderr
    [row] = json.loads(node_process.cli("studies", "--json").stdout)
    assert (row["state"], row["latest_job_state"], row["completed_by"]) == ("complete", "ready", "manual")
    table = node_process.cli("studies")
    assert table.returncode == 0 and study_uid[:12] in table.stdout


def test_send_reports_refusals_with_exit_1(node_process: NodeProcess, tmp_path: Path) -> None:
    node_process.peers.append({"name": "self", "ae_title": "TRIPHASE"})
    node_process.extra_node = {"min_free_disk_mb": 10**9}  # watermark far above the free space
    node_process.start()
    write_study(tmp_path / "study", series=1, per_series=2)
    sent = node_process.cli("send", str(tmp_path / "study"), "--to", f"TRIPHASE@127.0.0.1:{node_process.port}",
                            "--json")
    summary = json.loads(sent.stdout)
    assert sent.returncode == 1
    assert summary["refused"] == 2 and {p["status"] for p in summary["problems"]} == {"0xA700"}


def test_sigterm_stops_cleanly(node_process: NodeProcess) -> None:
    node_process.start()
    started = time.monotonic()
    assert node_process.terminate() == 0
    assert time.monotonic() - started < 15
    assert "DICOM node stopped" in node_process.log()


def test_configuration_errors_exit_2_in_one_line(node_process: NodeProcess) -> None:
    node_process.write_config()
    node_process.config_path.write_text("[node]\nport = 'x'\n")
    run = node_process.cli("studies")
    assert run.returncode == 2
    assert run.stderr.startswith("triphase: configuration error:") and "Traceback" not in run.stderr
    shown = node_process.cli("--config", str(node_process.data_dir / "missing.toml"), "config", "show")
    assert shown.returncode == 2 and "not found" in shown.stderr


def test_config_show_masks_secrets(node_process: NodeProcess) -> None:
    node_process.db_url = "postgresql+psycopg://triphase:s3cret@db.example/triphase"
    node_process.write_config()
    shown = node_process.cli("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["db"]["url"] == "postgresql+psycopg://triphase:***@db.example/triphase"
    assert "s3cret" not in shown.stdout
    assert data["node"]["peers"][0]["ae_title"] == "STORESCU"


def test_config_show_masks_secret_query_parameters(node_process: NodeProcess) -> None:
    node_process.db_url = "postgresql://db.example/triphase?password=s3cret&sslmode=require"
    node_process.extra_toml = '[broker]\nurl = "redis://broker.example:6379/0?password=t0ken"\n'
    node_process.write_config()
    shown = node_process.cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "s3cret" not in shown.stdout and "t0ken" not in shown.stdout
    assert "password=***&sslmode=require" in shown.stdout


def store_one(node_process: NodeProcess) -> int:
    ds = ct_dataset(generate_uid(), generate_uid(), index=0, size=16)
    ae = AE(ae_title="TESTER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node_process.port, ae_title="TRIPHASE")
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_data_is_private_to_the_service_account(node_process: NodeProcess) -> None:
    node_process.data_dir.mkdir(parents=True)
    node_process.data_dir.chmod(0o755)  # made by hand, or by an older version
    node_process.start()
    assert store_one(node_process) == 0
    assert node_process.terminate() == 0
    data = node_process.data_dir
    spool = data / "spool"
    for folder in (data, spool, spool / ".tmp", *spool.glob("*"), *spool.glob("*/*")):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    files = [*spool.glob("*/*/*.dcm"), *data.glob("triphase.db*")]
    assert len(files) >= 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _set(value: object) -> object:
    """``value`` without its nulls: TOML has none, so unset settings are left out of it."""
    if isinstance(value, dict):
        return {k: _set(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set(v) for v in value]
    return value


def test_config_show_prints_the_same_configuration_as_toml(node_process: NodeProcess) -> None:
    node_process.write_config()
    as_toml = node_process.cli("config", "show")
    as_json = node_process.cli("config", "show", "--json")
    assert as_toml.returncode == 0, as_toml.stderr
    assert as_toml.stdout.startswith(f"# configuration file: {node_process.config_path}\n")
    assert tomllib.loads(as_toml.stdout) == _set(json.loads(as_json.stdout))
