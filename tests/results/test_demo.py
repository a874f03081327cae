"""The demo, reduced: a study per role set, predictions, SR and SC that validate, printed in words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.conftest import require_tool


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    done = subprocess.run([triphase, "demo", "--studies", "2", "--training", "15"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = " ".join(done.stdout.split())
    assert "RANDOM INITIALISATION" in text and "NOT FOR DIAGNOSTIC USE" in text
    assert text.count("phases found: pre =") == 2
    assert text.count("predicted") == 2 and "pathology (synthetic truth)" in text
    assert "Evaluation on 2 lesions" in text

    pacs = tmp_path / "data" / "demo" / "pacs"
    objects = [pydicom.dcmread(p) for p in pacs.rglob("*.dcm")]
    assert sorted(o.Modality for o in objects) == ["OT", "OT", "SR", "SR"] or \
        sorted(o.Modality for o in objects).count("SR") == 2
    dciodvfy = require_tool("dciodvfy")
    for path in pacs.rglob("*.dcm"):
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        assert not [line for line in run.stderr.splitlines() if line.startswith("Error")], path
    assert len(list((tmp_path / "data" / "demo" / "png").glob("*.png"))) == 2
