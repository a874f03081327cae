"""SR and SC: valid (dciodvfy, dsrdump), readable back with highdicom, deterministic identities."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from tests.conftest import require_tool
from worker.analysis import AnalysisResult, analyse_study
from worker.grouping import load_rules
from worker.grouping.series_info import scan_studies
from worker.results.algorithm import algorithm_for
from worker.results.identity import device_uid, sc_uid, sr_uid
from worker.results.sr import PRIVATE_SCHEME

RULES = load_rules()


def analyse_first(studies: Path, classifier, artifact, data_dir: Path) -> AnalysisResult:  # type: ignore[no-untyped-def]
    folder = sorted(studies.glob("study-*"))[0]
    [(uid, series)] = scan_studies([folder]).series.items()
    return analyse_study(uid, series, RULES, classifier=classifier, algorithm=algorithm_for(artifact),
                         device_uid=device_uid(data_dir))


@pytest.mark.parametrize("task", ["ct-histology", "mri-ehcc"])
def test_outputs_validate_and_round_trip(trained, task: str, tmp_path: Path) -> None:
    studies, artifact, classifier = trained(task)
    result = analyse_first(studies, classifier, artifact, tmp_path)
    assert result.outcome == "analysed", result.reason
    assert result.sr is not None and len(result.scs) == len(result.lesions) >= 1
    sr_path, sc_path = tmp_path / "sr.dcm", tmp_path / "sc.dcm"
    result.sr.save_as(sr_path, enforce_file_format=True)
    result.scs[0].save_as(sc_path, enforce_file_format=True)

    dciodvfy = require_tool("dciodvfy")
    for path in (sr_path, sc_path):
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("Error")]
        assert errors == [], (path.name, errors)
    dump = subprocess.run([require_tool("dsrdump"), str(sr_path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0 and "Imaging Measurement Report" in dump.stdout

    sr = hd.sr.srread(sr_path)
    assert sr.VerificationFlag == "UNVERIFIED" and sr.StudyInstanceUID == result.study_uid
    [group] = sr.content.get_planar_roi_measurement_groups()
    lesion = result.lesions[0]
    assert group.tracking_identifier == lesion.lesion_id
    values = {m.name.meaning.replace("Probability of ", "").replace(" ", "_"): m.value
              for m in group.get_measurements()}
    assert values == lesion.probabilities  # exactly, as written
    [evaluation] = group.get_qualitative_evaluations()
    assert evaluation.value.value == lesion.label.upper()
    assert evaluation.value.scheme_designator == PRIVATE_SCHEME
    assert group.finding_sites[0].value.meaning == "Liver"
    # highdicom lists the source images' scanner first and itself last; the algorithm is in between.
    assert "triphase" in [e.Manufacturer for e in sr.ContributingEquipmentSequence]

    sc = pydicom.dcmread(sc_path)
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    assert sc.StudyInstanceUID == result.study_uid and sc.PatientID == pydicom.dcmread(
        next(p for p in sorted(studies.glob("study-*"))[0].glob("*.dcm"))).PatientID
    assert "not for diagnostic use" in sc.ImageComments and sc.BodyPartExamined
    assert sc.pixel_array.shape[2] == 3 and sc.pixel_array.std() > 10


def test_identities_are_deterministic(trained, tmp_path: Path) -> None:
    studies, artifact, classifier = trained("mri-ehcc")
    first = analyse_first(studies, classifier, artifact, tmp_path)
    second = analyse_first(studies, classifier, artifact, tmp_path)
    assert first.sr is not None and second.sr is not None
    assert first.sr.SOPInstanceUID == second.sr.SOPInstanceUID == sr_uid(first.study_uid, artifact.hash)
    assert first.sr.SeriesInstanceUID == second.sr.SeriesInstanceUID
    assert [s.SOPInstanceUID for s in first.scs] == [s.SOPInstanceUID for s in second.scs]
    assert first.scs[0].SOPInstanceUID == sc_uid(first.study_uid, artifact.hash, first.lesions[0].lesion_id)
    assert sr_uid(first.study_uid, "another-model-version") != first.sr.SOPInstanceUID
    assert device_uid(tmp_path) == device_uid(tmp_path)


def test_analyze_command(trained, tmp_path: Path) -> None:
    import json
    import os
    import sys

    studies, artifact, _ = trained("ct-histology")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPHASE_")}
    env["TRIPHASE_DATA_DIR"] = str(tmp_path / "data")
    triphase = str(Path(sys.executable).with_name("triphase"))
    folders = [str(p) for p in sorted(studies.glob("study-*"))[:2]]
    done = subprocess.run([triphase, "analyze", *folders, "--model", str(artifact.path), "--out",
                           str(tmp_path / "out"), "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = json.loads(done.stdout)
    assert len(summaries) == 2
    for summary in summaries:
        assert summary["outcome"] == "analysed" and summary["model"] == artifact.hash
        assert set(summary["roles"]) == {"pre", "arterial", "portal", "delayed"}
        assert all(Path(f).is_file() for f in summary["files"]) and len(summary["files"]) == 2
        assert summary["lesions"][0]["label"] in (*artifact.classes, "indeterminate")
