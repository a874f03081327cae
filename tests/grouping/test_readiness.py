"""The role check the node completes by: sure on whole studies of every vendor style, unsure on gaps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.uid import generate_uid

from node.completion import RoleReport
from tests.grouping.conftest import STYLES, copy_study, rewrite
from worker.grouping import load_rules
from worker.grouping.readiness import GroupingRoleCheck

CHECK = GroupingRoleCheck(load_rules())


def _check(folder: Path) -> RoleReport:
    files = sorted(folder.rglob("*.dcm"))
    return CHECK(str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files)


@pytest.mark.parametrize("task,style", [("ct-histology", s) for s in STYLES] + [("mri-ehcc", "ge"),
                                                                                  ("mri-ehcc", "siemens")])
def test_whole_studies_are_ready(synth_run: Callable[[str, str], Path], task: str, style: str) -> None:
    report = _check(sorted(synth_run(task, style).glob("study-*"))[0])
    assert report.ready, report
    assert report.task == task and not report.missing


def _series_files(folder: Path, description: str) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm")
                  if description in str(pydicom.dcmread(p, stop_before_pixels=True).get("SeriesDescription", "")))


def test_a_missing_phase_is_named(synth_run: Callable[[str, str], Path], tmp_path: Path) -> None:
    study = copy_study(synth_run("ct-histology", "siemens"), tmp_path / "study")
    for path in _series_files(study, "Delay"):
        path.unlink()
    report = _check(study)
    assert not report.ready and report.missing == ("delayed",)


def test_a_hole_in_the_instance_numbers_makes_the_check_unsure(synth_run: Callable[[str, str], Path],
                                                               tmp_path: Path) -> None:
    study = copy_study(synth_run("ct-histology", "siemens"), tmp_path / "study")
    arterial = _series_files(study, "ArtPhase")
    middle = sorted(arterial, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))[3]
    middle.unlink()
    report = _check(study)
    assert not report.missing and not report.ready
    assert any("instance number(s) missing" in reason for reason in report.unsure), report


def test_fewer_images_than_announced_makes_the_check_unsure(synth_run: Callable[[str, str], Path],
                                                            tmp_path: Path) -> None:
    study = copy_study(synth_run("ct-histology", "ge"), tmp_path / "study")

    def announce(ds: pydicom.Dataset) -> None:
        if ds.Modality == "CT":
            ds.ImagesInAcquisition = 99
    rewrite(study, announce)
    report = _check(study)
    assert not report.ready and any("of 99 announced images" in reason for reason in report.unsure), report


@pytest.mark.parametrize("style", ["siemens", "canon"])
def test_multi_frame_studies_are_ready(multiframe_run: Callable[[str, str], Path], style: str) -> None:
    """One instance per series (canon: one instance holding every phase) is whole as it stands."""
    report = _check(sorted(multiframe_run("ct-histology", style).glob("study-*"))[0])
    assert report.ready, report


def test_a_missing_multi_frame_instance_makes_the_check_unsure(synth_run: Callable[[str, str], Path],
                                                               tmp_path: Path) -> None:
    """A series sent as three multi-frame instances (numbers 1, 2, 3) without the second is not whole."""
    study = copy_study(synth_run("ct-histology", "siemens"), tmp_path / "study")
    arterial = sorted(_series_files(study, "ArtPhase"),
                      key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))
    datasets = [pydicom.dcmread(path) for path in arterial]
    thirds = [datasets[k * len(datasets) // 3:(k + 1) * len(datasets) // 3] for k in range(3)]
    for path in arterial:
        path.unlink()
    for number, part in enumerate(thirds, start=1):
        converted = LegacyConvertedEnhancedCTImage(
            part, series_instance_uid=str(part[0].SeriesInstanceUID), series_number=int(part[0].SeriesNumber),
            sop_instance_uid=generate_uid(), instance_number=number)
        converted.save_as(study / f"arterial-{number}.dcm", enforce_file_format=True)
    assert _check(study).ready
    (study / "arterial-2.dcm").unlink()
    report = _check(study)
    assert not report.missing and not report.ready
    assert any("1 instance number(s) missing between 1 and 3" in reason for reason in report.unsure), report
