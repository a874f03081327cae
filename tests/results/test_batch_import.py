"""Batch import of a folder of studies: stored, recorded, queued on the batch queue; resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from db.engine import Database
from db.schema import Job, OutboxEntry


def test_batch_import_is_resumable(trained, tmp_path: Path) -> None:
    studies, _, _ = trained("mri-ehcc")
    folders = sorted(studies.glob("study-*"))[:3]
    (folders[0] / "junk.dcm").write_bytes(b"not dicom at all")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    try:
        first = subprocess.run([triphase, "batch", "import", *map(str, folders[:2]), "--json"],
                               capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stderr
        one = json.loads(first.stdout)
        assert one["stored"] > 0 and one["already_there"] == 0 and one["studies_queued"] == 2
        assert [u["path"].endswith("junk.dcm") for u in one["unreadable"]] == [True]
        subset = studies.parent / "labels-subset.csv"
        lines = (studies / "labels.csv").read_text().splitlines()
        uids = {__import__("pydicom").dcmread(next(f.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID
                for f in folders}
        subset.write_text("\n".join([lines[0], *[line for line in lines[1:] if line.split(",")[1] in uids]]) + "\n")
        run = subprocess.run([triphase, "batch", "import", *map(str, folders), "--labels", str(subset), "--json"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr
        again = json.loads(run.stdout)
        assert again["truth_rows"] == 3
        assert again["already_there"] == one["stored"] and again["studies_queued"] == 1
        assert again["studies_already_queued"] == 2
    finally:
        (folders[0] / "junk.dcm").unlink()
    database = Database(f"sqlite:///{tmp_path / 'data' / 'triphase.db'}")
    try:
        with database.session() as s:
            assert len(s.scalars(select(Job)).all()) == 3
            assert set(s.scalars(select(OutboxEntry.queue)).all()) == {"batch"}
    finally:
        database.close()
