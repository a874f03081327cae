"""Phase and sequence identification on synthetic studies of every vendor style, on variants the
generator does not write (no descriptions, misleading ones, no injection time, several
reconstructions, dual-echo in one series), and on pydicom's real samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.grouping.conftest import STYLES, copy_study, rewrite, role_truth
from worker.grouping import Outcome, group_paths, load_rules
from worker.grouping.rules import RulesError
from worker.grouping.signals import fat_water_phase

RULES = load_rules()
TASKS = ("ct-histology", "mri-ehcc")


def assert_matches_truth(results: dict, truth: dict) -> None:
    assert set(results) == set(truth)
    for uid, grouping in results.items():
        assert grouping.outcome is Outcome.OK, grouping.problems
        for role, (series_uid, acquisition) in truth[uid].items():
            match = grouping.roles[role]
            assert match is not None, f"{role} missing"
            assert match.series.series_uid == series_uid, (role, match.series.description)
            if match.series.acquisition_number is not None:
                assert str(match.series.acquisition_number) == acquisition, role


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", TASKS)
def test_every_vendor_style(synth_run, task: str, style: str) -> None:
    run = synth_run(task, style)
    results = group_paths(sorted(run.glob("study-*")), RULES)
    assert_matches_truth(results, role_truth(run))
    for grouping in results.values():
        assert grouping.task == task
        # localizers, reformats, ADC maps, dose screens and the SEG are excluded with a reason
        assert len(grouping.excluded) >= 3 and all(grouping.excluded.values())


@pytest.mark.parametrize("task", TASKS)
def test_without_any_description(synth_run, tmp_path: Path, task: str) -> None:
    run = synth_run(task, "siemens")
    study = copy_study(run, tmp_path / "study")

    def blank(ds: pydicom.Dataset) -> None:
        ds.SeriesDescription = ""
        if "ProtocolName" in ds:
            del ds.ProtocolName

    rewrite(study, blank)
    results = group_paths([study], RULES)
    truth = {uid: roles for uid, roles in role_truth(run).items() if uid in results}
    assert_matches_truth(results, truth)


def test_misleading_descriptions_lose_to_timing(synth_run, tmp_path: Path) -> None:
    run = synth_run("ct-histology", "ge")
    study = copy_study(run, tmp_path / "study")
    truth = role_truth(run)
    [uid] = [u for u in truth if u in group_paths([study], RULES)]
    swapped = {truth[uid]["arterial"][0]: "PORTAL VENOUS", truth[uid]["portal"][0]: "ARTERIAL 35s"}

    def mislabel(ds: pydicom.Dataset) -> None:
        if ds.SeriesInstanceUID in swapped:
            ds.SeriesDescription = swapped[ds.SeriesInstanceUID]

    rewrite(study, mislabel)
    results = group_paths([study], RULES)
    assert_matches_truth(results, {uid: truth[uid]})


def test_no_injection_time_and_agent_on_every_series(synth_run, tmp_path: Path) -> None:
    run = synth_run("ct-histology", "siemens")
    study = copy_study(run, tmp_path / "study")

    def strip(ds: pydicom.Dataset) -> None:
        for keyword in ("ContrastBolusStartTime", "ContrastBolusStopTime"):
            if keyword in ds:
                delattr(ds, keyword)
        if ds.Modality == "CT":
            ds.ContrastBolusAgent = "IOPAMIDOL"  # some sites record it on every series, pre included

    rewrite(study, strip)
    results = group_paths([study], RULES)
    truth = role_truth(run)
    assert_matches_truth(results, {uid: truth[uid] for uid in results})
    reasons = [r for m in next(iter(results.values())).roles.values() if m for r in m.reasons]
    assert any("estimated" in r for r in reasons)


def test_thin_and_thick_reconstructions_are_one_acquisition(synth_run, tmp_path: Path) -> None:
    run = synth_run("ct-histology", "ge")
    study = copy_study(run, tmp_path / "study")
    truth = role_truth(run)
    [uid] = [u for u in truth if u in group_paths([study], RULES)]
    arterial_uid = truth[uid]["arterial"][0]
    thin_uid = generate_uid()
    for path in sorted(study.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.SeriesInstanceUID == arterial_uid:
            ds.SliceThickness = 5.0
            ds.save_as(path)
            ds.SeriesInstanceUID = thin_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SliceThickness = 1.25
            ds.SeriesNumber = 99
            ds.save_as(study / f"thin-{path.name}")
    [grouping] = group_paths([study], RULES).values()
    assert grouping.outcome is Outcome.OK, grouping.problems
    assert grouping.roles["arterial"].series.series_uid == arterial_uid  # the 5 mm-like one is preferred
    assert "same acquisition" in grouping.excluded[thin_uid]


def test_missing_phase_is_incomplete_with_reason(synth_run, tmp_path: Path) -> None:
    run = synth_run("ct-histology", "japanese")
    study = copy_study(run, tmp_path / "study")
    truth = role_truth(run)
    [uid] = [u for u in truth if u in group_paths([study], RULES)]
    delayed_uid = truth[uid]["delayed"][0]
    for path in study.glob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID == delayed_uid:
            path.unlink()
    [grouping] = group_paths([study], RULES).values()
    assert grouping.outcome is Outcome.INCOMPLETE
    assert grouping.roles["delayed"] is None
    assert any("delayed" in p for p in grouping.problems)


def test_dual_echo_in_one_series_is_split_by_echo_time(synth_run, tmp_path: Path) -> None:
    run = synth_run("mri-ehcc", "ge")
    study = copy_study(run, tmp_path / "study")
    truth = role_truth(run)
    [uid] = [u for u in truth if u in group_paths([study], RULES)]
    in_uid, out_uid = truth[uid]["t1_in"][0], truth[uid]["t1_out"][0]

    def merge(ds: pydicom.Dataset) -> None:
        if ds.SeriesInstanceUID == out_uid:
            ds.SeriesInstanceUID = in_uid
            ds.SeriesDescription = "Ax DUAL ECHO"
        elif ds.SeriesInstanceUID == in_uid:
            ds.SeriesDescription = "Ax DUAL ECHO"

    rewrite(study, merge)
    [grouping] = group_paths([study], RULES).values()
    assert grouping.outcome is Outcome.OK, grouping.problems
    t1_in, t1_out = grouping.roles["t1_in"], grouping.roles["t1_out"]
    assert t1_in.series.series_uid == t1_out.series.series_uid == in_uid
    assert t1_in.series.echo_time > t1_out.series.echo_time
    assert t1_in.series.acquisition_number != t1_out.series.acquisition_number


def test_pydicom_real_samples_are_excluded_with_reasons() -> None:
    files = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))
    results = group_paths(files, RULES)
    assert len(results) > 5
    for grouping in results.values():
        assert grouping.outcome in (Outcome.INCOMPLETE, Outcome.NOT_APPLICABLE)
        assert grouping.excluded or grouping.problems
        for reason in grouping.excluded.values():
            assert reason and isinstance(reason, str)


def test_fat_water_physics() -> None:
    assert fat_water_phase(4.6, 1.5) < 0.05 or fat_water_phase(4.6, 1.5) > 0.95
    assert abs(fat_water_phase(2.3, 1.5) - 0.5) < 0.05
    assert abs(fat_water_phase(1.15, 3.0) - 0.5) < 0.05


def test_site_rules_file_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[task.x]\nmodality = "CT"\nroles = ["a"]\nrequired = ["b"]\nreference = "a"\n'
                   '[task.x.role.a]\ndescription = ["(unclosed"]\n')
    with pytest.raises(RulesError, match="rules"):
        load_rules(bad)


def test_groups_command_json_contract(synth_run) -> None:
    run = synth_run("ct-histology", "canon")
    study = sorted(run.glob("study-*"))[0]
    triphase = str(Path(sys.executable).with_name("triphase"))
    done = subprocess.run([triphase, "groups", str(study), "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    [(uid, entry)] = data.items()
    assert entry["task"] == "ct-histology" and entry["outcome"] == "ok"
    assert set(entry["roles"]) == {"pre", "arterial", "portal", "delayed"}
    for role in entry["roles"].values():
        assert set(role) == {"series", "acquisition_number", "score", "reasons"}
        assert isinstance(role["acquisition_number"], int)  # canon: all phases in one series, split
        assert role["reasons"]
    assert isinstance(entry["excluded"], dict)
    text = subprocess.run([triphase, "groups", str(study)], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and "arterial" in text.stdout


@pytest.mark.parametrize("task", TASKS)
def test_acquisition_order_alone(synth_run, tmp_path: Path, task: str) -> None:
    """No descriptions, no injection time, no agent: acquisition times and physics must do."""
    run = synth_run(task, "ge")
    study = copy_study(run, tmp_path / "study", index=1)

    def strip(ds: pydicom.Dataset) -> None:
        ds.SeriesDescription = ""
        for keyword in ("ProtocolName", "ContrastBolusStartTime", "ContrastBolusAgent", "ContrastBolusRoute"):
            if keyword in ds:
                delattr(ds, keyword)

    rewrite(study, strip)
    results = group_paths([study], RULES)
    truth = role_truth(run)
    assert_matches_truth(results, {uid: truth[uid] for uid in results})


@pytest.mark.parametrize("style", STYLES)
def test_image_check_sees_the_arterial_phase(synth_run, style: str) -> None:
    """The pixels agree with the headers: the arterial phase has the strongest vessel enhancement."""
    results = group_paths(sorted(synth_run("ct-histology", style).glob("study-*")), RULES)
    for grouping in results.values():
        arterial = grouping.roles["arterial"]
        assert arterial is not None
        assert any("strongest vessel enhancement" in r for r in arterial.reasons), arterial.reasons
        for role in ("pre", "portal", "delayed"):
            assert not any("strongest vessel" in r for r in grouping.roles[role].reasons)  # type: ignore[union-attr]


def test_image_check_outweighs_a_lying_description_without_timing(synth_run, tmp_path: Path) -> None:
    """No timing in the headers and descriptions that swap arterial and portal: the pixels decide."""
    run = synth_run("ct-histology", "ge")
    study = copy_study(run, tmp_path / "study")
    truth = role_truth(run)
    [uid] = [u for u in truth if u in group_paths([study], RULES)]
    swapped = {truth[uid]["arterial"][0]: "PORTAL", truth[uid]["portal"][0]: "ARTERIAL"}

    def lie(ds: pydicom.Dataset) -> None:
        for keyword in ("ContrastBolusStartTime", "AcquisitionTime", "SeriesTime", "ContentTime"):
            if keyword in ds:
                delattr(ds, keyword)
        if ds.SeriesInstanceUID in swapped:
            ds.SeriesDescription = swapped[ds.SeriesInstanceUID]

    rewrite(study, lie)
    [grouping] = group_paths([study], RULES).values()
    arterial = grouping.roles["arterial"]
    assert arterial is not None and arterial.series.series_uid == truth[uid]["arterial"][0], grouping.problems
