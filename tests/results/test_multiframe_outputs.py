"""SR and SC of a multi-frame study name the frames they were made from, and match the classic twin's.

A study written classic and then converted to Legacy Converted Enhanced CT/MR (one instance per
series, one frame per former image) is analysed both ways. Each frame of the converted instance
records which classic image it was (ConversionSourceAttributesSequence), so every reference in the
converted study's SR and SC can be mapped back and must name the very image the classic twin's
outputs name. dciodvfy must find no error in either.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.conftest import require_tool
from worker.analysis import AnalysisResult, analyse_study
from worker.grouping import load_rules
from worker.grouping.series_info import scan_studies
from worker.results import key_image
from worker.results.algorithm import algorithm_for
from worker.results.identity import device_uid
from worker.synth.multiframe import convert_study

RULES = load_rules()
Reference = tuple[str, int | None]


def _analyse(folder: Path, classifier, artifact, data_dir: Path) -> AnalysisResult:  # type: ignore[no-untyped-def]
    [(uid, series)] = scan_studies([folder]).series.items()
    return analyse_study(uid, series, RULES, classifier=classifier, algorithm=algorithm_for(artifact),
                         device_uid=device_uid(data_dir))


def _walk(items: Iterator[Dataset] | list[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _regions(sr: Dataset) -> list[tuple[Reference, np.ndarray]]:
    """Each SCOORD's SELECTED FROM image (UID, frame) and its polyline, in document order."""
    found = []
    for item in _walk(sr.ContentSequence):
        if item.get("ValueType") != "SCOORD":
            continue
        [image] = item.ContentSequence
        reference = image.ReferencedSOPSequence[0]
        frames = reference.get("ReferencedFrameNumber")
        frame = None if frames is None else int(frames if isinstance(frames, int) else frames[0])
        found.append(((str(reference.ReferencedSOPInstanceUID), frame),
                      np.asarray(item.GraphicData, dtype=float).reshape(-1, 2)))
    return found


def _sources(sc: Dataset) -> list[Reference]:
    return [(str(s.ReferencedSOPInstanceUID),
             None if s.get("ReferencedFrameNumber") is None else int(s.ReferencedFrameNumber))
            for s in sc.SourceImageSequence]


def _classic_of(folder: Path) -> dict[Reference, Reference]:
    """(converted instance UID, frame) -> (classic image UID, None), from each frame's conversion source."""
    mapping: dict[Reference, Reference] = {}
    for path in folder.glob("*-mf.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for number, item in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
            [source] = item.ConversionSourceAttributesSequence
            mapping[(str(ds.SOPInstanceUID), number)] = (str(source.ReferencedSOPInstanceUID), None)
    return mapping


def _dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([require_tool("/usr/bin/dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("task", ["ct-histology", "mri-ehcc"])
def test_outputs_of_a_converted_study_cite_the_frames_of_the_classic_images(
        trained, task: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    studies, artifact, classifier = trained(task)
    classic_folder = sorted(studies.glob("study-*"))[0]
    converted_folder = tmp_path / "converted"
    shutil.copytree(classic_folder, converted_folder)
    assert convert_study(converted_folder) >= 4
    classic = _analyse(classic_folder, classifier, artifact, tmp_path)
    twin = _analyse(converted_folder, classifier, artifact, tmp_path)
    assert classic.outcome == twin.outcome == "analysed", (classic.reason, twin.reason)
    # Same series and split acquisitions (highdicom's converter appends to the series description).
    assert {role: m and (m["series"], m["acquisition_number"]) for role, m in twin.roles.items()} == {
        role: m and (m["series"], m["acquisition_number"]) for role, m in classic.roles.items()}
    assert [lesion.lesion_id for lesion in twin.lesions] == [lesion.lesion_id for lesion in classic.lesions]
    assert twin.sr is not None and classic.sr is not None

    to_classic = _classic_of(converted_folder)
    converted_uids = {uid for uid, _ in to_classic}
    twin_regions, classic_regions = _regions(twin.sr), _regions(classic.sr)
    assert len(twin_regions) == len(classic_regions) == len(twin.lesions)
    for (reference, polyline), (classic_reference, classic_polyline) in zip(twin_regions, classic_regions,
                                                                           strict=True):
        assert reference[0] in converted_uids and reference[1] is not None and reference[1] >= 1
        assert to_classic[reference] == classic_reference  # the frame that was the classic image
        assert np.allclose(polyline, classic_polyline, atol=1e-3)
    evidence = {str(i.ReferencedSOPInstanceUID) for e in twin.sr.CurrentRequestedProcedureEvidenceSequence
                for s in e.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert {reference[0] for reference, _ in twin_regions} <= evidence

    for number, (sc, classic_sc) in enumerate(zip(twin.scs, classic.scs, strict=True)):
        sources = _sources(sc)
        assert sources[0] == twin_regions[number][0]  # the SC shows the slice the SR's region is on
        assert all(uid in converted_uids and frame is not None for uid, frame in sources)
        assert [to_classic[source] for source in sources] == _sources(classic_sc)
        left, top, right, bottom = key_image.REFERENCE_BOX
        assert np.array_equal(sc.pixel_array[top:bottom, left:right], classic_sc.pixel_array[top:bottom, left:right])

    files = [tmp_path / "sr.dcm", *(tmp_path / f"sc{n}.dcm" for n in range(len(twin.scs)))]
    twin.sr.save_as(files[0], enforce_file_format=True)
    for path, sc in zip(files[1:], twin.scs, strict=True):
        sc.save_as(path, enforce_file_format=True)
    for path in files:
        assert _dciodvfy_errors(path) == [], path.name
