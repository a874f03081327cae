"""From synthetic studies to composites: ROI from SEG, motion, channel order, fallbacks, bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from models.compositing import CT_LIVER, ChannelRecipe, Window, make_composite
from worker.grouping import load_rules
from worker.study_composites import build_composites
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

RULES = load_rules()


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ct")
    generate_run(out, StudyOptions(task="ct-histology", seed=21, difficulty=0.2, slices=30, matrix=96,
                                   style="ge", extras=False), 2, [])
    return out


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mr")
    generate_run(out, StudyOptions(task="mri-ehcc", seed=22, difficulty=0.2, slices=12, matrix=48,
                                   style="siemens", extras=False), 1, [])
    return out


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_roi_from_seg_and_motion_match_the_truth(ct_run: Path) -> None:
    results = build_composites([ct_run], RULES, size=64)
    labels = {r["study_uid"]: r for r in rows(ct_run / "labels.csv")}
    motion = {(r["study_uid"], r["role"]): np.array([float(r[k]) for k in ("dx_mm", "dy_mm", "dz_mm")])
              for r in rows(ct_run / "motion.csv") if r["role"]}
    assert len(results) == 2
    for uid, study in results.items():
        assert study.skipped is None
        [item] = study.composites
        truth = labels[uid]
        centre = np.array([float(truth[f"center_{a}_mm"]) for a in "xyz"])
        assert item.lesion.lesion_id == truth["lesion_id"] and item.lesion.source.value == "seg"
        assert np.allclose(item.lesion.centre_mm, centre, atol=2.0)
        spacing = np.array(pydicom.dcmread(next((ct_run / sorted(p.name for p in ct_run.glob("study-*"))[0])
                                                  .glob("*.dcm"))).PixelSpacing[0])
        for role, found in item.motion.items():
            assert found is not None
            error = np.abs(np.array(found.mm) - motion[(uid, role)])
            # one voxel craniocaudally (slice spacing 200/30 mm), 1.5 pixels in plane
            assert error[2] <= 200 / 30 + 0.5, (role, found.mm, motion[(uid, role)])
            assert error[0] <= 1.5 * spacing + 1.0 and error[1] <= 1.5 * spacing + 1.0, (role, found.mm)
        assert item.composite.rgb.shape == (64, 64, 3) and item.composite.tensor.shape == (3, 64, 64)
        assert set(item.source_images) == {"arterial", "delayed", "pre"} and all(item.source_images.values())


def test_channel_order_pixel_by_pixel() -> None:
    planes = {"arterial": np.full((20, 20), 260.0), "delayed": np.full((20, 20), 60.0),
              "pre": np.full((20, 20), -140.0)}
    recipe = ChannelRecipe(channels=("arterial", "delayed", "pre"))
    composite = make_composite(planes, recipe, modality="CT", size=16)
    expected = [round(CT_LIVER.apply(np.array([v]))[0] * 255) for v in (260.0, 60.0, -140.0)]
    assert expected == [255, 128, 0]
    assert (composite.rgb[..., 0] == 255).all() and (composite.rgb[..., 1] == 128).all()
    assert (composite.rgb[..., 2] == 0).all()
    swapped = make_composite(planes, ChannelRecipe(channels=("pre", "arterial", "delayed")), modality="CT", size=16)
    assert (swapped.rgb[..., 0] == 0).all() and (swapped.rgb[..., 1] == 255).all()
    with pytest.raises(KeyError, match="t2_haste"):
        make_composite(planes, ChannelRecipe(channels=("arterial", "t2_haste", "pre")), modality="CT", size=16)


def test_mri_percentile_window_is_robust() -> None:
    values = np.linspace(0, 1000, 10_000).reshape(100, 100)
    values[0, 0] = 1e6  # one hot pixel must not squash the rest
    scaled = Window(percentiles=(1, 99)).apply(values)
    assert 0.45 < scaled[50, 50] < 0.55 and scaled[0, 0] == 1.0


def test_mri_study_gives_the_paper_recipe(mr_run: Path) -> None:
    [study] = build_composites([mr_run], RULES, size=32).values()
    assert study.skipped is None and study.recipe.channels == ("arterial", "t2_haste", "t1_in")
    assert study.reference_role == "hepatobiliary"
    [item] = study.composites
    assert item.composite.rgb.std() > 5  # not a blank picture


def _copy(run: Path, target: Path) -> Path:
    return Path(shutil.copytree(sorted(run.glob("study-*"))[0], target))


def test_without_seg_the_fallback_is_declared(ct_run: Path, tmp_path: Path) -> None:
    study_dir = _copy(ct_run, tmp_path / "study")
    for path in study_dir.glob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).Modality == "SEG":
            path.unlink()
    [study] = build_composites([study_dir], RULES, size=32).values()
    assert study.skipped is None and study.roi_source == "fallback-centre-crop"
    assert study.sidecar(study.composites[0])["roi_source"] == "fallback-centre-crop"
    [skipped] = build_composites([study_dir], RULES, size=32, fallback="skip").values()
    assert skipped.composites == [] and "no lesion annotation" in (skipped.skipped or "")


def test_missing_phase_corrupt_series_and_mixed_frames_are_typed(ct_run: Path, tmp_path: Path) -> None:
    truth = [r for r in rows(ct_run / "motion.csv") if r["role"]]

    def series_of(study_dir: Path, role: str) -> list[Path]:
        uid = next(r["series_uid"] for r in truth if r["role"] == role)
        return [p for p in study_dir.glob("*.dcm")
                if pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID == uid]

    missing = _copy(ct_run, tmp_path / "missing")
    for path in series_of(missing, "pre"):
        path.unlink()
    [study] = build_composites([missing], RULES, size=32).values()
    assert study.composites == [] and "pre" in (study.skipped or "")

    corrupt = _copy(ct_run, tmp_path / "corrupt")
    victim = series_of(corrupt, "arterial")[0]
    ds = pydicom.dcmread(victim)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(victim)
    [study] = build_composites([corrupt], RULES, size=32).values()
    assert study.composites == [] and "decode" in (study.skipped or "")

    mixed = _copy(ct_run, tmp_path / "mixed")
    other_frame = generate_uid()
    for path in series_of(mixed, "delayed"):
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = other_frame
        ds.save_as(path)
    [study] = build_composites([mixed], RULES, size=32).values()
    assert study.composites == [] and "frames of reference" in (study.skipped or "")


def test_composite_command_writes_png_and_sidecar(ct_run: Path, tmp_path: Path) -> None:
    triphase = str(Path(sys.executable).with_name("triphase"))
    study_dir = sorted(ct_run.glob("study-*"))[0]
    done = subprocess.run([triphase, "composite", str(study_dir), "--out", str(tmp_path / "out"), "--size", "48"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [png] = list((tmp_path / "out").glob("*.png"))
    sidecar = json.loads(png.with_suffix(".json").read_text())
    assert sidecar["channels"] == {"R": "arterial", "G": "delayed", "B": "pre"}
    assert sidecar["roi_source"] == "seg" and set(sidecar["motion"]) == {"arterial", "delayed", "pre"}
    from PIL import Image

    assert Image.open(png).size == (48, 48)


def test_neighbouring_slices_option(ct_run: Path) -> None:
    study_dir = sorted(ct_run.glob("study-*"))[0]
    [single] = build_composites([study_dir], RULES, size=32).values()
    [several] = build_composites([study_dir], RULES, size=32, neighbours=1).values()
    [centre] = single.composites
    assert [c.slice_index for c in several.composites] == [centre.slice_index - 1, centre.slice_index,
                                                            centre.slice_index + 1]
    assert np.array_equal(several.composites[1].composite.rgb, centre.composite.rgb)
    assert not np.array_equal(several.composites[0].composite.rgb, centre.composite.rgb)
