"""A multi-frame instance of a few hundred MB, sent by dcmtk's storescu to ``triphase node``.

The node must stream it to the spool (its peak memory stays far below the instance's size, which is
read from /proc/<pid>/status VmHWM, the process's high-water mark), store it byte for byte, and
complete the study by its roles: one Legacy Converted Enhanced CT instance that holds all four
contrast phases of a series is the whole study (with its SEG, which the sender's studies need),
with no more images to wait for.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from db.engine import Database
from db.queries import StudySummary, instance_paths, list_studies
from tests.conftest import require_tool
from tests.factories import upscaled_multiframe
from tests.processes import NodeProcess
from worker.synth.context import StudyOptions
from worker.synth.multiframe import convert_study
from worker.synth.run import generate_run

pytestmark = pytest.mark.interop
MiB = 1024 * 1024
SLICES, MATRIX, FACTOR = 150, 32, 16  # 4 phases x 150 slices = 600 frames of 512 x 512, 16 bits: 300 MiB


def _memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _dataset_sha256(path: Path) -> str:
    """SHA-256 of a Part-10 file's data set, after its file meta (which the receiver writes anew)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        head = handle.read(144)  # preamble, "DICM" and the (0002,0000) group length element
        assert head[128:132] == b"DICM" and head[132:136] == b"\x02\x00\x00\x00"
        handle.seek(144 + int.from_bytes(head[140:144], "little"))
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def large_study(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A synthetic four-phase CT study (canon style: one series holds every phase), converted to one
    Legacy Converted Enhanced CT instance enlarged to 512 x 512 frames, and its SEG (which names the
    instance's frames); the large file is removed afterwards."""
    run = tmp_path / "synth"
    generate_run(run, StudyOptions(task="ct-histology", seed=11, difficulty=0.3, style="canon", slices=SLICES,
                                   matrix=MATRIX, extras=False), 1, [])
    study = next(run.glob("study-*"))
    assert convert_study(study) == 1
    [small] = study.glob("*-mf.dcm")
    [seg] = (path for path in study.glob("*.dcm") if path != small)
    large = tmp_path / "large-mf.dcm"
    upscaled_multiframe(small, large, FACTOR)
    yield large, seg
    large.unlink(missing_ok=True)


def _completed(node: NodeProcess, timeout: float) -> StudySummary:
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            studies = list_studies(database)
            if studies and studies[0].state != "receiving":
                return studies[0]
            time.sleep(0.2)
        raise AssertionError(f"no completion in {timeout} s: {list_studies(database)}\n{node.log()[-2000:]}")
    finally:
        database.close()


def test_a_large_multi_frame_instance_is_streamed_and_completes_the_study(large_study: tuple[Path, Path],
                                                                        tmp_path: Path) -> None:
    storescu = require_tool("/usr/bin/storescu")
    large_instance, seg = large_study
    size = large_instance.stat().st_size
    assert size > 280 * MiB
    node = NodeProcess(tmp_path / "node", peers=[{"name": "dcmtk", "ae_title": "STORESCU"}],
                       extra_node={"quiet_period_s": 120.0, "settle_s": 1.0, "completion_poll_s": 0.2})
    try:
        node.start()
        assert node.proc is not None
        idle_kib = _memory_kib(node.proc.pid, "VmRSS")
        started = time.monotonic()
        sent = subprocess.run([storescu, "-R", "-aet", "STORESCU", "-aec", "TRIPHASE", "127.0.0.1", str(node.port),
                               str(large_instance), str(seg)], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, TCP_NODELAY="1"))
        assert sent.returncode == 0, sent.stderr[-2000:] + node.log()[-2000:]
        received_kib = _memory_kib(node.proc.pid, "VmHWM")
        study = _completed(node, timeout=30)
        completed_s = time.monotonic() - started
        peak_kib = _memory_kib(node.proc.pid, "VmHWM")
    finally:
        node.kill()

    # Completed by its roles (the quiet period is 120 s): one instance holding every phase is whole.
    assert (study.state, study.completed_by, study.series, study.instances) == ("complete", "roles", 2, 2), study
    assert completed_s < 60
    # Streamed: receiving grew the node's memory by a few MiB, not by the instance; the role check,
    # which reads the header and one frame of each phase, by what a few 512 x 512 frames take.
    memory = f"idle {idle_kib} KiB, after receiving {received_kib} KiB, peak {peak_kib} KiB, instance {size} B"
    assert (received_kib - idle_kib) * 1024 < 16 * MiB, memory
    assert (peak_kib - idle_kib) * 1024 < size / 5 and peak_kib * 1024 < size, memory
    database = Database(f"sqlite:///{node.data_dir / 'triphase.db'}")
    try:
        stored = instance_paths(database, study.study_uid)
    finally:
        database.close()
    uid = pydicom.dcmread(large_instance, stop_before_pixels=True).SOPInstanceUID
    stored_path = node.data_dir / "spool" / stored[uid]
    assert _dataset_sha256(stored_path) == _dataset_sha256(large_instance)  # every byte of every frame
