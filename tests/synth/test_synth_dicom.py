"""The written DICOM: valid IODs, determinism, geometry, vendor styles, truth against headers."""

from __future__ import annotations

import csv
import filecmp
import subprocess
from collections import defaultdict

import numpy as np
import pydicom
import pytest
from synth_helpers import read_study, require_dciodvfy, small_options

from worker.synth.run import generate_run
from worker.synth.truth import LABEL_COLUMNS, READ_COLUMNS, parse_readers

STYLES = ("ge", "siemens", "canon", "japanese")
TASKS = ("ct-histology", "mri-ehcc")


@pytest.mark.timeout(60)
def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path):
    readers = parse_readers("general:2:0.5")
    for name in ("a", "b"):
        generate_run(tmp_path / name, small_options("ct-histology", style="mixed", max_lesions=2), 2, readers)
    generate_run(tmp_path / "c", small_options("ct-histology", style="mixed", max_lesions=2, seed=12), 2, readers)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 20
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", [str(p) for p in files_a], shallow=False)
    assert mismatch == [] and errors == []
    labels_a = (tmp_path / "a" / "labels.csv").read_text()
    assert labels_a != (tmp_path / "c" / "labels.csv").read_text()
    uids_a = {row["study_uid"] for row in csv.DictReader((tmp_path / "a" / "labels.csv").open())}
    uids_c = {row["study_uid"] for row in csv.DictReader((tmp_path / "c" / "labels.csv").open())}
    assert not uids_a & uids_c


@pytest.mark.timeout(90)
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("style", STYLES)
def test_every_object_passes_dciodvfy(make_study, task, style):
    tool = require_dciodvfy()
    record = make_study(task, style=style)
    series = read_study(record.folder)
    # One file of every series (and of every acquisition of a multiphase series), the SEG included.
    chosen = []
    for datasets in series.values():
        seen = set()
        for ds in datasets:
            key = (ds.get("AcquisitionNumber"), ds.get("DiffusionBValue"))
            if key not in seen:
                seen.add(key)
                chosen.append(ds.filename)
    sop_classes = {pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID.name for p in chosen}
    expected = {"CT Image Storage", "Secondary Capture Image Storage"} if task == "ct-histology" \
        else {"MR Image Storage"}
    assert expected | {"Segmentation Storage"} <= sop_classes
    result = subprocess.run([tool, *chosen], capture_output=True, text=True, timeout=60)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert errors == [], errors[:5]


def _positions(datasets):
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("task", TASKS)
def test_geometry_round_trips_and_the_seg_marks_the_lesion_where_labels_say(make_study, task):
    record = make_study(task, style="siemens", labels=("early_hcc", "early_hcc"), motion_mm=12.0)
    series = read_study(record.folder)
    for datasets in series.values():
        ds0 = datasets[0]
        if ds0.Modality == "SEG" or "ImageOrientationPatient" not in ds0:
            continue
        by_acq = defaultdict(list)
        for ds in datasets:
            by_acq[(ds.AcquisitionNumber, ds.get("DiffusionBValue"), tuple(ds.ImageOrientationPatient))].append(ds)
        for group in by_acq.values():
            iop = np.array([float(v) for v in group[0].ImageOrientationPatient])
            row, col = iop[:3], iop[3:]
            assert abs(row @ col) < 1e-6 and abs(np.linalg.norm(row) - 1) < 1e-6
            normal = np.cross(row, col)
            if len(group) > 1:
                steps = np.diff(_positions(group) @ normal)
                assert np.allclose(np.abs(steps), abs(steps[0]), atol=1e-3)
                if "SpacingBetweenSlices" in group[0]:
                    assert abs(abs(steps[0]) - float(group[0].SpacingBetweenSlices)) < 1e-3
                if group[0].Modality == "CT" and "AXIAL" in group[0].ImageType:
                    assert abs(abs(steps[0]) - float(group[0].SliceThickness)) < 1e-3
            for ds in group:
                assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
    seg = next(ds for datasets in series.values() for ds in datasets if ds.Modality == "SEG")
    truth = {row.lesion_id: row for row in record.labels}
    assert [s.TrackingID for s in seg.SegmentSequence] == list(truth)
    referenced = {ref.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence
                  for ref in item.ReferencedInstanceSequence}
    images = {ds.SOPInstanceUID: ds for datasets in series.values() for ds in datasets}
    assert referenced <= set(images)
    assert {images[uid].FrameOfReferenceUID for uid in referenced} == {seg.FrameOfReferenceUID}
    # The mask's centroid in patient coordinates is the lesion centre of labels.csv.
    spacing = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    iop = np.array([float(v) for v in
                    seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient])
    points = defaultdict(list)
    frames = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        holder = item if "SegmentIdentificationSequence" in item else seg.SharedFunctionalGroupsSequence[0]
        number = holder.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        ipp = np.array([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        r, c = np.nonzero(frame)
        points[number].append(ipp + np.outer(c * spacing[1], iop[:3]) + np.outer(r * spacing[0], iop[3:]))
    for segment in seg.SegmentSequence:
        centroid = np.concatenate(points[segment.SegmentNumber]).mean(axis=0)
        expected = np.array(truth[segment.TrackingID].center_mm)
        slice_gap = 200.0 / small_options(task).slices
        assert np.all(np.abs(centroid[:2] - expected[:2]) < 3.0), (centroid, expected)
        assert abs(centroid[2] - expected[2]) < slice_gap, (centroid, expected)


@pytest.mark.timeout(60)
def test_labels_csv_matches_the_dicom_headers(tmp_path):
    summary = generate_run(tmp_path, small_options("mri-ehcc", style="mixed", max_lesions=2), 3,
                           parse_readers("general:2:0.7,abdominal:1:0.9"))
    with (tmp_path / "labels.csv").open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        rows = list(reader)
    with (tmp_path / "reads.csv").open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == READ_COLUMNS
        reads = list(reader)
    assert len(rows) == summary.lesions and len(reads) == 3 * len(rows)
    by_study = defaultdict(list)
    for row in rows:
        by_study[row["study_uid"]].append(row)
    assert len(by_study) == 3
    for folder in sorted(tmp_path.glob("study-*")):
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
        study_uids = {ds.StudyInstanceUID for ds in headers}
        assert len(study_uids) == 1
        study_rows = by_study[study_uids.pop()]
        assert {ds.PatientID for ds in headers} == {r["patient_id"] for r in study_rows}
        assert {ds.AccessionNumber for ds in headers} == {r["accession_number"] for r in study_rows}
        assert all(str(ds.PatientName).startswith("SYNTH^PATIENT") for ds in headers)
        assert len({ds.FrameOfReferenceUID for ds in headers if "FrameOfReferenceUID" in ds}) == 1
        seg = next(ds for ds in headers if ds.Modality == "SEG")
        assert sorted(s.TrackingID for s in seg.SegmentSequence) == sorted(r["lesion_id"] for r in study_rows)
        for r in study_rows:
            assert r["label"] in ("early_hcc", "progressed_hcc") and r["source"] == "synthetic"
            assert 8.0 <= float(r["size_mm"]) <= 20.0
    assert {r["label"] for r in reads} <= {"early_hcc", "progressed_hcc"}
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in reads)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("task,phases", [("ct-histology", 4), ("mri-ehcc", 4)])
def test_single_series_multiphase_splits_by_acquisition_number(make_study, task, phases):
    record = make_study(task, style="canon")
    series = read_study(record.folder)
    slices = small_options(task).slices
    multi = [d for d in series.values() if len({ds.get("AcquisitionNumber") for ds in d}) > 1]
    assert len(multi) == 1
    groups = defaultdict(list)
    for ds in multi[0]:
        groups[int(ds.AcquisitionNumber)].append(ds)
    assert sorted(groups) == list(range(1, phases + 1))
    assert all(len(g) == slices for g in groups.values())
    times = [min(ds.AcquisitionTime for ds in groups[n]) for n in sorted(groups)]
    assert times == sorted(times)
    # Only the pre-contrast acquisition lacks the contrast agent; later ones carry its start time.
    assert all("ContrastBolusAgent" not in ds for ds in groups[1])
    for n in sorted(groups)[1:]:
        assert all(ds.ContrastBolusAgent and ds.ContrastBolusStartTime < ds.AcquisitionTime for ds in groups[n])
    assert len({tuple(map(float, ds.ImagePositionPatient)) for ds in multi[0]}) == slices
    numbers = sorted(int(ds.InstanceNumber) for ds in multi[0])
    assert numbers == list(range(1, phases * slices + 1))


@pytest.mark.timeout(60)
def test_japanese_style_decodes_with_pydicom(make_study):
    record = make_study("ct-histology", style="japanese")
    descriptions = {}
    for path in record.folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        descriptions[int(ds.SeriesNumber)] = ds.SeriesDescription
        assert ds.PatientName.ideographic == "合成^患者"
        if ds.Modality == "CT" and "AXIAL" in ds.ImageType and "ContrastBolusAgent" in ds:
            assert ds.ContrastBolusAgent == "イオパミロン370"
    text = " ".join(descriptions.values())
    for word in ("単純", "動脈相", "門脈相", "平衡相"):
        assert word in text
    # Raw bytes are UTF-8, as ISO_IR 192 requires.
    raw = (record.folder / "0003-00001.dcm").read_bytes()
    assert "動脈相".encode() in raw
    mr = make_study("mri-ehcc", style="japanese")
    mr_text = " ".join(pydicom.dcmread(p, stop_before_pixels=True).SeriesDescription for p in mr.folder.glob("*.dcm"))
    assert "肝細胞相" in mr_text and "EOB 動脈相" in mr_text


@pytest.mark.timeout(60)
def test_in_and_opposed_phase_differ_by_echo_time_only_in_the_header(make_study):
    record = make_study("mri-ehcc", style="siemens")
    series = read_study(record.folder)
    dual = [d for d in series.values() if d[0].SeriesDescription == "t1_fl2d_opp-in_tra_bh"]
    assert len(dual) == 2
    echo = sorted(float(d[0].EchoTime) for d in dual)
    field = float(dual[0][0].MagneticFieldStrength)
    assert echo == ([2.3, 4.6] if field < 2 else [1.15, 2.3])
    assert dual[0][0].AcquisitionTime == dual[1][0].AcquisitionTime
    dwi = next(d for d in series.values() if "TRACEW" in d[0].ImageType)
    b_values = sorted({float(ds.DiffusionBValue) for ds in dwi})
    assert b_values == [50.0, 800.0]
