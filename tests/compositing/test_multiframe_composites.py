"""A study as Legacy Converted Enhanced CT/MR (highdicom's converters) gives the composites of its
classic twin: volumes from frames, the SEG's lesion through ReferencedFrameNumber, frame references."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from worker.grouping import load_rules
from worker.grouping.series_info import scan_studies
from worker.roi import SEG_STORAGE, geometry_index, lesions_from_seg
from worker.study_composites import build_composites
from worker.synth.context import StudyOptions
from worker.synth.multiframe import convert_study
from worker.synth.run import generate_run
from worker.volumes import load_volume

RULES = load_rules()


@pytest.fixture(scope="module", params=[("ct-histology", "ge", 16, 64), ("mri-ehcc", "canon", 10, 48)])
def twins(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    task, style, slices, matrix = request.param
    classic = tmp_path_factory.mktemp("classic")
    generate_run(classic, StudyOptions(task=task, seed=31, difficulty=0.2, slices=slices, matrix=matrix,
                                       style=style, extras=False), 1, [])
    converted = tmp_path_factory.mktemp("converted") / "run"
    shutil.copytree(classic, converted)
    for study in converted.glob("study-*"):
        assert convert_study(study) >= 4
    return classic, converted


def test_composites_of_the_converted_twin_equal_the_classic(twins: tuple[Path, Path]) -> None:
    classic, converted = (build_composites([run], RULES, size=64) for run in twins)
    assert len(classic) == len(converted) == 1
    assert classic.keys() == converted.keys()
    a, b = next(iter(classic.values())), next(iter(converted.values()))
    assert b.skipped is None and len(b.composites) == len(a.composites) >= 1
    for x, y in zip(a.composites, b.composites, strict=True):
        assert x.lesion.lesion_id == y.lesion.lesion_id and x.slice_index == y.slice_index
        assert np.allclose(x.lesion.centre_mm, y.lesion.centre_mm, atol=1e-3)
        assert np.allclose(x.composite.rgb.astype(float), y.composite.rgb.astype(float),
                           atol=1)
        assert x.source_frames == {} and set(y.source_frames) == set(y.source_images)
        assert all(frame >= 1 for frame in y.source_frames.values())


def test_volume_from_frames_matches_the_classic_volume(twins: tuple[Path, Path]) -> None:
    classic, converted = (scan_studies([run]) for run in twins)
    (study,) = classic.series
    by_uid = {s.series_uid: s for s in converted.series[study]}
    compared = 0
    for series in classic.series[study]:
        twin = by_uid[series.series_uid]
        if len(series.images) < 4 or series.plane != "axial" or not twin.images[0].frame_number:
            continue
        if len({i.position for i in series.images}) != len(series.images):
            continue  # several phases in one series: compared after splitting by the composites test
        a, b = load_volume(series), load_volume(twin)
        assert np.allclose(a.affine, b.affine) and np.array_equal(a.voxels, b.voxels)
        compared += 1
    assert compared >= 3


def test_seg_without_plane_geometry_is_placed_through_referenced_frames(twins: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    classic_run, converted_run = twins
    scan = scan_studies([converted_run])
    (series,) = scan.series.values()
    seg_path = next(i.path for s in series if s.sop_class_uid == SEG_STORAGE for i in s.images)
    expected = lesions_from_seg(seg_path)
    seg = pydicom.dcmread(seg_path)
    referenced = {int(src.ReferencedFrameNumber) for f in seg.PerFrameFunctionalGroupsSequence
                  for d in f.DerivationImageSequence for src in d.SourceImageSequence}
    assert referenced and min(referenced) >= 1
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    del seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    stripped = tmp_path / "seg.dcm"
    seg.save_as(stripped)
    with pytest.raises(ValueError, match="no plane geometry"):
        lesions_from_seg(stripped)
    found = lesions_from_seg(stripped, geometry_index(series))
    assert [lesion.lesion_id for lesion in found] == [lesion.lesion_id for lesion in expected]
    for a, b in zip(found, expected, strict=True):
        assert np.allclose(a.box_min_mm, b.box_min_mm, atol=0.01) and np.allclose(a.centre_mm, b.centre_mm, atol=0.01)
