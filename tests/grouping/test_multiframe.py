"""Enhanced and Legacy Converted Enhanced CT/MR: the frame reader against the classic originals
(converted by highdicom), hand-built Enhanced MR functional groups, pydicom's enhanced MR samples,
and grouping of every vendor style in both forms."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.grouping.conftest import STYLES
from worker.grouping import Grouping, group_paths, load_rules
from worker.grouping.frames import FrameView, read_frames
from worker.grouping.series_info import image_infos, scan_studies
from worker.grouping.splitting import split_phases
from worker.synth.multiframe import convert_series

RULES = load_rules()
Run = Callable[[str, str], Path]
TASKS = ("ct-histology", "mri-ehcc")


def _classic_series(run: Path, description: str) -> list[Dataset]:
    study = sorted(run.glob("study-*"))[0]
    found: list[Dataset] = [ds for ds in map(pydicom.dcmread, sorted(study.glob("*.dcm")))
             if description in str(ds.get("SeriesDescription", ""))]
    assert found, description
    return found


def _roles(results: dict[str, Grouping]) -> dict[str, dict[str, tuple[str, int | None] | None]]:
    return {uid: {role: None if m is None else (m.series.series_uid, m.series.acquisition_number)
                  for role, m in g.roles.items()} for uid, g in results.items()}


@pytest.mark.parametrize(("task", "style", "description"), [
    ("ct-histology", "siemens", "ArtPhase"), ("mri-ehcc", "canon", "Quick3D Dynamic"),
    ("mri-ehcc", "siemens", "TRACEW"), ("mri-ehcc", "siemens", "t1_fl2d_opp-in"),
    ("mri-ehcc", "ge", "DUAL ECHO OP")])
def test_frames_of_a_converted_series_state_what_the_classic_images_did(synth_run: Run, task: str, style: str,
                                                                        description: str) -> None:
    classic = _classic_series(synth_run(task, style), description)
    converted, mapping = convert_series(classic)
    frames = {info.frame_number: info for info in image_infos(converted, Path("mf.dcm"))}
    assert len(frames) == len(classic) == int(converted.NumberOfFrames)
    for ds in classic:
        original = image_infos(ds, Path("x.dcm"))[0]
        uid, number = mapping[str(ds.SOPInstanceUID)]
        frame = frames[number]
        assert (frame.sop_instance_uid, frame.frame_number) == (uid, number) == frame.reference
        assert original.frame_number is None
        for name in ("position", "orientation", "pixel_spacing", "acquisition_number", "acquisition_seconds",
                     "echo_time", "b_value"):
            assert getattr(frame, name) == pytest.approx(getattr(original, name)), name
    facts = read_frames(converted)
    assert all(f.window is not None and f.slice_thickness == float(classic[0].SliceThickness) for f in facts)


def _as_enhanced_mr(converted: Dataset) -> Dataset:
    """Move the facts a Legacy Converted object parks in Unassigned sequences into Enhanced MR macros."""
    ds = copy.deepcopy(converted)
    shared = ds.SharedFunctionalGroupsSequence[0]
    del shared.UnassignedSharedConvertedAttributesSequence
    timing = Dataset()
    timing.RepetitionTime, timing.EchoTrainLength = 4.2, 1
    shared.MRTimingAndRelatedParametersSequence = [timing]
    ds.EchoPulseSequence = "GRADIENT"
    for number, item in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
        del item.UnassignedPerFrameConvertedAttributesSequence
        content = item.FrameContentSequence[0]
        phase = (number - 1) // 6 + 1
        content.FrameAcquisitionNumber = 1  # one acquisition; the phases are temporal positions
        content.TemporalPositionIndex = phase
        content.FrameReferenceDateTime = "20020918083000.5+0900"
        echo, diffusion, usage, frame_type = Dataset(), Dataset(), Dataset(), Dataset()
        echo.EffectiveEchoTime = 1.25  # differs from the parked classic EchoTime (1.3)
        diffusion.DiffusionBValue = 0
        usage.ContrastBolusAgentNumber = 1
        usage.ContrastBolusAgentAdministered = "NO" if phase == 1 else "YES"
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "OTHER", "NONE"]
        item.MREchoSequence, item.MRDiffusionSequence = [echo], [diffusion]
        item.ContrastBolusUsageSequence, item.MRImageFrameTypeSequence = [usage], [frame_type]
    return ds


def test_enhanced_mr_functional_groups_are_read_and_phases_split_by_temporal_position(synth_run: Run,
                                                                                     tmp_path: Path) -> None:
    classic = _classic_series(synth_run("mri-ehcc", "canon"), "Quick3D Dynamic")
    enhanced = _as_enhanced_mr(convert_series(classic)[0])
    facts = read_frames(enhanced)
    assert [f.temporal_position for f in facts[::6]] == [1, 2, 3, 4]
    assert {f.echo_time for f in facts} == {1.25}
    assert facts[0].contrast is False and facts[-1].contrast is True
    assert facts[0].reference_seconds == pytest.approx(8 * 3600 + 30 * 60 + 0.5)
    assert facts[0].b_value == 0 and facts[0].echo_train_length == 1
    assert FrameView(enhanced, 1).get("RepetitionTime", "MRTimingAndRelatedParametersSequence") == 4.2
    enhanced.save_as(tmp_path / "dyn.dcm", enforce_file_format=True)
    scan = scan_studies([tmp_path])
    (series,) = next(iter(scan.series.values()))
    assert series.scanning_sequence == ("GR",) and series.repetition_time == 4.2
    parts, reason = split_phases(series)
    assert [p.acquisition_number for p in parts] == [1, 2, 3, 4]
    assert reason is not None and "TemporalPositionIndex (Frame Content)" in reason
    assert all(len({i.position for i in p.images}) == 6 for p in parts)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("task", TASKS)
def test_legacy_converted_twin_groups_like_the_classic_study(synth_run: Run, multiframe_run: Run, task: str,
                                                               style: str) -> None:
    classic = group_paths(sorted(synth_run(task, style).glob("study-*")), RULES)
    converted_run = multiframe_run(task, style)
    assert all(p.name.endswith("-mf.dcm") for p in converted_run.glob("study-*/*.dcm")
               if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID.name.startswith("Legacy"))
    converted = group_paths(sorted(converted_run.glob("study-*")), RULES)
    assert _roles(converted) == _roles(classic)
    for uid, grouping in converted.items():
        assert grouping.outcome is classic[uid].outcome
        assert grouping.task == task
        split = [p for p in grouping.problems if "split by" in p]
        assert all("(Frame Content)" in p for p in split)
        if style == "canon":
            assert split, "the single dynamic series was split on its frames"
