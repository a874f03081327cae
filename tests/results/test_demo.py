"""The demo: each study analysed once, completed by its roles, SR and SC that validate, printed in words."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pydicom

from tests.conftest import require_tool


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    done = subprocess.run([triphase, "demo", "--studies", "4", "--training", "15"], capture_output=True,
                          text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = " ".join(done.stdout.split())
    assert "RANDOM INITIALISATION" in text and "NOT FOR DIAGNOSTIC USE" in text
    # 4 studies, 4 jobs: each analysed once, completed when its phases and SEG were all there.
    jobs = re.findall(r"Study [0-9.]+ \(job #(\d+), completed by (\w+)\): (\w+)", text)
    assert len(jobs) == 4 and len({job for job, _, _ in jobs}) == 4, done.stdout
    assert {(by, state) for _, by, state in jobs} == {("roles", "sent")}, done.stdout
    assert text.count("phases found: pre =") == 4
    assert text.count("predicted") == 4 and "pathology (synthetic truth)" in text
    assert "Evaluation on 4 lesions" in text
    # Paths are never broken across lines, even when the output is not a terminal.
    stored = [line for line in done.stdout.splitlines() if "stored in the stand-in PACS:" in line]
    assert len(stored) == 8 and all(line.rstrip().endswith(".dcm") for line in stored), stored

    pacs = tmp_path / "data" / "demo" / "pacs"
    objects = [pydicom.dcmread(p) for p in pacs.rglob("*.dcm")]
    assert sorted(o.Modality for o in objects).count("SR") == 4
    dciodvfy = require_tool("dciodvfy")
    for path in pacs.rglob("*.dcm"):
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        assert not [line for line in run.stderr.splitlines() if line.startswith("Error")], path
    assert len(list((tmp_path / "data" / "demo" / "png").glob("*.png"))) == 4


def test_demo_on_multiframe_studies(tmp_path: Path) -> None:
    """The same loop when every series arrives as one Legacy Converted Enhanced CT instance."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    done = subprocess.run([triphase, "demo", "--studies", "2", "--training", "15", "--multiframe"],
                          capture_output=True, text=True, timeout=400, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = " ".join(done.stdout.split())
    assert "multi-frame Legacy Converted Enhanced CT" in text
    jobs = re.findall(r"Study [0-9.]+ \(job #(\d+), completed by (\w+)\): (\w+)", text)
    assert len(jobs) == 2 and {(by, state) for _, by, state in jobs} == {("roles", "sent")}, done.stdout
    incoming = [pydicom.dcmread(p, stop_before_pixels=True)
                for p in (tmp_path / "data" / "demo" / "incoming").rglob("*.dcm")]
    classes = {o.SOPClassUID.name for o in incoming if o.Modality == "CT"}
    assert "Legacy Converted Enhanced CT Image Storage" in classes and "CT Image Storage" not in classes
    reports = [pydicom.dcmread(p) for p in (tmp_path / "data" / "demo" / "pacs").rglob("*.dcm")]
    reports = [r for r in reports if r.Modality == "SR"]
    assert len(reports) == 2
    # The image region cites a frame of the multi-frame instance it was drawn on.
    assert all(cites_a_frame(r) for r in reports)


def cites_a_frame(dataset: pydicom.Dataset) -> bool:
    """Whether a Referenced Frame Number stands anywhere in the data set, sequences included."""
    found = []
    dataset.walk(lambda _ds, element: found.append(element.tag == 0x00081160))
    return any(found)
