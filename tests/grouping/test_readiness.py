"""The role check the node completes by: sure on whole studies of every vendor style, unsure on gaps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

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
