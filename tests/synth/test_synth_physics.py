"""Phase physics and lesion kinetics, measured in the written pixels; readers; the command line."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest
from synth_helpers import hu, read_study
from typer.testing import CliRunner

from worker.synth import ct_physics
from worker.synth.tasks import TASKS
from worker.synth.truth import LabelRow, parse_readers, simulate_reads

CT_ROLES = {"pre": 1, "arterial": 2, "portal": 3, "delayed": 4}


def _ct_phases(record):
    """{role: (sorted images, breath-hold offset)} of a separate-series CT study."""
    series = read_study(record.folder)
    out = {}
    for s in record.series:
        for role, _, offset, _ in s.acquisitions:
            if role in CT_ROLES:
                images = sorted(series[s.series_uid], key=lambda ds: -float(ds.ImagePositionPatient[2]))
                out[role] = (images, offset)
    return out


def _roi_mean(images, point, radius_mm):
    """Mean HU within ``radius_mm`` of a patient point, on the image plane nearest to it."""
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in images])
    ds = images[int(np.argmin(np.abs(z - point[2])))]
    x0, y0 = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    ps = float(ds.PixelSpacing[0])
    rows, cols = np.mgrid[0:ds.Rows, 0:ds.Columns]
    mask = (x0 + cols * ps - point[0]) ** 2 + (y0 + rows * ps - point[1]) ** 2 <= radius_mm ** 2
    assert mask.sum() >= 3
    return float(hu(ds)[mask].mean())


def _moved(point, offset, motion=1.0):
    return tuple(p + motion * o for p, o in zip(point, offset, strict=True))


@pytest.mark.timeout(60)
def test_aorta_peaks_in_the_arterial_phase_and_portal_vein_in_the_portal_phase(make_study):
    record = make_study("ct-histology", style="ge", extras=False, slices=20, matrix=96, motion_mm=6.0)
    phases = _ct_phases(record)
    aorta = {role: _roi_mean(images, (14.0, 34.0, 40.0), 6.0) for role, (images, _) in phases.items()}
    portal = {role: _roi_mean(images, _moved((-35.0, 8.0, 22.0), offset), 5.0)
              for role, (images, offset) in phases.items()}
    liver = {role: _roi_mean(images, _moved((-100.0, 20.0, 60.0), offset), 12.0)
             for role, (images, offset) in phases.items()}
    assert max(aorta, key=aorta.get) == "arterial" and aorta["arterial"] > aorta["pre"] + 150
    assert max(portal, key=portal.get) == "portal"
    assert max(liver, key=liver.get) == "portal" and liver["pre"] < liver["arterial"] < liver["portal"]
    assert 30 < liver["pre"] < 80 and 30 < aorta["pre"] < 60


def _lesion_hu(record, radius_fraction=0.5):
    phases = _ct_phases(record)
    row = record.labels[0]
    ref = record.reference_offset
    out = {}
    for role, (images, offset) in phases.items():
        centre = tuple(c - r + o for c, r, o in zip(row.center_mm, ref, offset, strict=True))
        lesion = _roi_mean(images, centre, max(row.size_mm / 2 * radius_fraction, 4.0))
        liver = _roi_mean(images, _moved((-100.0, 20.0, 60.0), offset), 12.0)
        out[role] = (lesion, liver)
    return out


@pytest.mark.timeout(60)
def test_class_kinetics_are_measurable_in_the_pixels(make_study):
    kw = dict(style="ge", extras=False, slices=40, matrix=128, motion_mm=5.0, difficulty=0.0)
    measured = {label: _lesion_hu(make_study("ct-histology", labels=(label,), **kw))
                for label in ("early_hcc", "well_hcc", "moderate_hcc", "poor_hcc")}
    contrast = {label: {role: les - liv for role, (les, liv) in m.items()} for label, m in measured.items()}
    # Early HCC is nearly iso-enhancing; arterial hyperenhancement and washout rise with grade.
    assert abs(contrast["early_hcc"]["arterial"]) < 15 and abs(contrast["early_hcc"]["portal"]) < 20
    arterial = [contrast[g]["arterial"] for g in ("early_hcc", "well_hcc", "moderate_hcc")]
    assert arterial == sorted(arterial) and contrast["moderate_hcc"]["arterial"] > 25
    for grade in ("moderate_hcc", "poor_hcc"):
        assert contrast[grade]["delayed"] < -15, grade  # washout
    assert contrast["poor_hcc"]["delayed"] < contrast["well_hcc"]["delayed"]
    # The cholangiocellular class: its core fills in progressively until the delayed phase.
    cc = _lesion_hu(make_study("ct-histology", labels=("non_hcc_cc",), **kw), radius_fraction=0.3)
    assert cc["delayed"][0] > cc["portal"][0] + 10 > cc["arterial"][0] + 10


@pytest.mark.timeout(60)
def test_mri_progressed_hcc_lacks_hepatobiliary_uptake_and_early_hcc_is_subtle(make_study):
    kw = dict(style="ge", extras=False, slices=40, matrix=128, motion_mm=5.0, difficulty=0.0)
    result = {}
    for label in ("early_hcc", "progressed_hcc"):
        record = make_study("mri-ehcc", labels=(label,), **kw)
        series = read_study(record.folder)
        row, ref = record.labels[0], record.reference_offset
        values = {}
        for s in record.series:
            for role, _, offset, _ in s.acquisitions:
                if role not in ("arterial", "hepatobiliary", "t2_haste"):
                    continue
                images = [ds for ds in series[s.series_uid]]
                for ds in images:
                    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
                centre = tuple(c - r + o for c, r, o in zip(row.center_mm, ref, offset, strict=True))
                lesion = _roi_mean(images, centre, max(row.size_mm / 4, 3.0))
                liver = _roi_mean(images, _moved((-100.0, 20.0, 60.0), offset), 12.0)
                values[role] = lesion / liver
        result[label] = values
    assert result["progressed_hcc"]["hepatobiliary"] < 0.6
    assert result["progressed_hcc"]["arterial"] > 1.2 and result["progressed_hcc"]["t2_haste"] > 1.4
    assert result["early_hcc"]["hepatobiliary"] > result["progressed_hcc"]["hepatobiliary"] + 0.2
    assert abs(result["early_hcc"]["t2_haste"] - 1.0) < 0.3


@pytest.mark.timeout(30)
def test_difficulty_controls_the_overlap_between_classes():
    def arterial(label, difficulty, n=400):
        rng = np.random.default_rng(0)
        return np.array([ct_physics.sample_kinetics(rng, label, difficulty).rim[1] for _ in range(n)])

    easy_well, easy_mod = arterial("well_hcc", 0.15), arterial("moderate_hcc", 0.15)
    hard_well, hard_mod = arterial("well_hcc", 1.0), arterial("moderate_hcc", 1.0)
    threshold = (ct_physics.KINETICS["well_hcc"][1] + ct_physics.KINETICS["moderate_hcc"][1]) / 2
    easy_error = ((easy_well > threshold).mean() + (easy_mod < threshold).mean()) / 2
    hard_error = ((hard_well > threshold).mean() + (hard_mod < threshold).mean()) / 2
    assert easy_error < 0.02
    assert hard_error > 0.15


@pytest.mark.timeout(30)
def test_noise_falls_with_slice_thickness():
    sigmas = {}
    for thickness in (1.25, 5.0):
        image = np.zeros((4, 128, 128), dtype=np.float32)
        ct_physics.add_noise(np.random.default_rng(1), image, thickness, 1.0)
        sigmas[thickness] = float(image.std())
    assert abs(sigmas[5.0] - ct_physics.NOISE_HU_AT_5MM) < 0.5
    assert abs(sigmas[1.25] / sigmas[5.0] - 2.0) < 0.1


@pytest.mark.timeout(30)
def test_simulated_readers_reach_their_accuracy():
    labels = TASKS["ct-histology"].labels
    rng = np.random.default_rng(3)
    groups = parse_readers("general:1:0.4,abdominal:1:0.8")
    correct = {"general": 0, "abdominal": 0}
    n = 1500
    for i in range(n):
        truth = LabelRow("P", "1.2.3", "A", "L1", labels[i % 5], (0.0, 0.0, 0.0), 10.0)
        for read in simulate_reads(rng, groups, labels, truth):
            correct[read[1]] += read[5] == truth.label
    assert abs(correct["general"] / n - 0.4) < 0.06
    assert abs(correct["abdominal"] / n - 0.8) < 0.06
    with pytest.raises(ValueError):
        parse_readers("general:x:0.4")


@pytest.mark.timeout(60)
def test_command_line_writes_a_run_and_rejects_bad_options(tmp_path):
    from worker.cli import app

    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["synth", str(out), "--task", "ct-histology", "--studies", "2", "--seed", "3",
                                 "--slices", "8", "--matrix", "32", "--balanced", "--style", "japanese",
                                 "--no-extras", "--difficulty", "hard", "--readers", "general:2:0.5"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "labels.csv").open(encoding="utf-8")))
    assert [r["label"] for r in rows] == ["early_hcc", "well_hcc"]  # balanced: one class after another
    assert len(list(csv.DictReader((out / "reads.csv").open(encoding="utf-8")))) == 4
    assert len(list((out / "study-0001").glob("*.dcm"))) == 4 * 8 + 1
    ds = pydicom.dcmread(next((out / "study-0002").glob("0002-*.dcm")), stop_before_pixels=True)
    assert ds.SpecificCharacterSet == "ISO_IR 192" and int(ds.Rows) == 32
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--task", "ct-histology", "--difficulty", "brutal"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--task", "liver"])
    assert bad.exit_code == 2
