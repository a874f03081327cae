"""dcmtk against triphase, both ways: echoscu/storescu -> node, triphase echo/send -> storescp."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from db.engine import Database
from db.queries import instance_paths
from tests.conftest import free_port, require_tool
from tests.factories import write_study
from tests.processes import TRIPHASE, NodeProcess, wait_for_port

pytestmark = pytest.mark.interop
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def test_echoscu_and_unknown_caller(node_process: NodeProcess) -> None:
    echoscu = require_tool("/usr/bin/echoscu")  # dcmtk by path: a virtual environment puts pynetdicom's first
    node_process.start()
    ok = subprocess.run([echoscu, "-aet", "ECHOSCU", "-aec", "TRIPHASE", "127.0.0.1", str(node_process.port)],
                        capture_output=True, text=True, timeout=30, env=DCMTK_ENV)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([echoscu, "-aet", "INTRUDER", "-aec", "TRIPHASE", "127.0.0.1", str(node_process.port)],
                         capture_output=True, text=True, timeout=30, env=DCMTK_ENV)
    assert bad.returncode != 0
    assert "Calling AE Title Not Recognized" in bad.stderr + bad.stdout


def test_storescu_study_lands_on_disk_and_in_database(node_process: NodeProcess, tmp_path: Path) -> None:
    storescu = require_tool("/usr/bin/storescu")
    study_uid, files = write_study(tmp_path / "study", series=3, per_series=4)
    node_process.start()
    run = subprocess.run([storescu, "-aet", "STORESCU", "-aec", "TRIPHASE", "127.0.0.1", str(node_process.port),
                          *map(str, files)], capture_output=True, text=True, timeout=60, env=DCMTK_ENV)
    assert run.returncode == 0, run.stderr
    listing = json.loads(node_process.cli("studies", "--json").stdout)
    assert [(s["study_uid"], s["series"], s["instances"]) for s in listing] == [(study_uid, 3, 12)]
    database = Database(f"sqlite:///{node_process.data_dir / 'triphase.db'}")
    paths = instance_paths(database, study_uid)
    database.close()
    for path in files:
        sent = dcmread(path)
        stored = dcmread(node_process.data_dir / "spool" / paths[sent.SOPInstanceUID])
        assert stored.PixelData == sent.PixelData and stored.StudyInstanceUID == study_uid


def test_triphase_send_and_echo_to_storescp(tmp_path: Path) -> None:
    storescp = require_tool("/usr/bin/storescp")
    out = tmp_path / "received"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen([storescp, "-aet", "STORESCP", "-od", str(out), str(port)], env=DCMTK_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
        env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
        echo = subprocess.run([TRIPHASE, "echo", f"STORESCP@127.0.0.1:{port}"], capture_output=True, text=True,
                              timeout=30, env=env)
        assert echo.returncode == 0, echo.stderr
        _, files = write_study(tmp_path / "study", series=2, per_series=3)
        (tmp_path / "study" / "notes.txt").write_text("not DICOM")
        sent = subprocess.run([TRIPHASE, "send", str(tmp_path / "study"), "--to", f"STORESCP@127.0.0.1:{port}",
                               "--json"], capture_output=True, text=True, timeout=60, env=env)
        summary = json.loads(sent.stdout)
        assert (summary["sent"], summary["failed"], summary["skipped"]) == (6, 0, 1)
        assert sent.returncode == 0, sent.stderr
        assert len(list(out.iterdir())) == 6
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_send_to_nobody_fails_with_exit_1(tmp_path: Path) -> None:
    _, files = write_study(tmp_path / "study", series=1, per_series=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    run = subprocess.run([TRIPHASE, "send", str(files[0]), "--to", f"NOBODY@127.0.0.1:{free_port()}"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 1
    assert "cannot reach" in run.stderr + run.stdout
    bad = subprocess.run([TRIPHASE, "echo", "not-an-address"], capture_output=True, text=True, timeout=30, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
