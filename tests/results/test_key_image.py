"""The Secondary Capture reads like a key image, and the SR's region is the same outline on the same slice.

The reference panel is compared with the source slice windowed here by hand; the SR's region is
compared with the SEG's mask that highdicom decodes (not our geometric resampling); the bars and
the text are counted and measured on the picture itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as Polygon
from PIL import Image

from tests.results.test_sr_sc import analyse_first
from worker.results import key_image
from worker.results.algorithm import AlgorithmInfo
from worker.results.key_image import CapturedLesion, Panel, ReferenceView
from worker.results.outline import ImagePlane, Outline, OutlineKind, box_on, contour
from worker.roi import Lesion, RoiSource


def _files_by_uid(folder: Path) -> dict[str, pydicom.Dataset]:
    found: dict[str, pydicom.Dataset] = {}
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        found[str(ds.SOPInstanceUID)] = ds
    return found


def _region(sr: pydicom.Dataset) -> pydicom.Dataset:
    """The SCOORD item of the (first) measurement group."""
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop(0)
        if item.get("ValueType") == "SCOORD":
            found: pydicom.Dataset = item
            return found
        stack.extend(item.get("ContentSequence", []))
    raise AssertionError("the SR has no image region")


def _reading_grey(source: pydicom.Dataset) -> np.ndarray:
    """The source slice at the reading window, computed here: CT W 180 L 70 in HU, MR 1-99.5 percentiles."""
    values = source.pixel_array.astype(np.float64) * float(source.get("RescaleSlope", 1) or 1) + float(
        source.get("RescaleIntercept", 0) or 0)
    low, high = (-20.0, 160.0) if source.Modality == "CT" else tuple(np.percentile(values, (1.0, 99.5)))
    grey: np.ndarray = np.clip((values - low) / (high - low), 0, 1) * 255
    return grey


def _ink_rows(region: np.ndarray, colour: tuple[int, int, int], tolerance: int = 60) -> int:
    """How many pixel rows tall the ink of ``colour`` is in ``region``."""
    close = (np.abs(region.astype(int) - np.array(colour)).max(axis=-1) < tolerance).any(axis=1)
    rows = np.flatnonzero(close)
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


def _runs(column: np.ndarray) -> int:
    lit = column.max(axis=-1) > 30
    return int(np.count_nonzero(lit[1:] & ~lit[:-1]) + int(lit[0]))


@pytest.mark.parametrize("task", ["ct-histology", "mri-ehcc"])
def test_key_image_panels_and_region(trained, task: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    studies, artifact, classifier = trained(task)
    result = analyse_first(studies, classifier, artifact, tmp_path)
    assert result.outcome == "analysed" and result.sr is not None
    lesion = result.lesions[0]
    sc = result.scs[0]
    picture = sc.pixel_array
    assert picture.shape[0] >= 1024 and picture.shape[1] >= 1024 and picture.shape[2] == 3

    # One slice: the SC's first source image is the image the SR's region is drawn on.
    region = _region(result.sr)
    region_uid = str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    assert str(sc.SourceImageSequence[0].ReferencedSOPInstanceUID) == region_uid
    files = _files_by_uid(sorted(studies.glob("study-*"))[0])
    source = files[region_uid]
    assert str(sc.SourceImageSequence[0].ReferencedSOPClassUID) == str(source.SOPClassUID)

    # The reference panel is that slice at the reading window.
    left, top, right, bottom = key_image.fit(key_image.REFERENCE_BOX, (int(source.Rows), int(source.Columns)),
                                             (float(source.PixelSpacing[0]), float(source.PixelSpacing[1])))
    expected = np.asarray(Image.fromarray(_reading_grey(source).astype(np.uint8)).resize(
        (right - left, bottom - top), Image.Resampling.BILINEAR), dtype=np.float64)
    shown = picture[top:bottom, left:right].astype(np.float64).mean(axis=-1)
    assert np.corrcoef(expected.ravel(), shown.ravel())[0, 1] > 0.9

    # The region is the SEG's outline of the lesion on that image (mask decoded by highdicom).
    assert lesion.roi_source == "seg"
    seg_ds = next(ds for ds in files.values() if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4")
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    [number] = seg.get_segment_numbers(tracking_id=lesion.lesion_id)
    mask = seg.get_pixels_by_source_instance([region_uid], segment_numbers=[number])[0, ..., 0] > 0
    rows, columns = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    inside = Polygon(np.asarray(region.GraphicData, dtype=float).reshape(-1, 2)).contains_points(
        np.c_[columns.ravel() + 0.5, rows.ravel() + 0.5]).reshape(mask.shape)
    assert mask.any() and (inside & mask).sum() / (inside | mask).sum() > 0.9

    # One bar per class, in the bar chart's column.
    bars = key_image.bars_box(len(lesion.probabilities))
    assert _runs(picture[bars[1]:bars[3], bars[2] - 64 - 3]) == len(lesion.probabilities)

    # The channel tiles are grey, the composite is colour, the Grad-CAM is a separate tile.
    for panel in (Panel.RED, Panel.GREEN, Panel.BLUE):
        tl, tt, tr, tb = key_image.tile_box(panel)
        tile = picture[tt + 3:tb - 3, tl + 3:tr - 3].astype(int)
        assert tile.std() > 0 and np.abs(tile[..., 0] - tile[..., 2]).max() == 0
    tl, tt, tr, tb = key_image.tile_box(Panel.COMPOSITE)
    assert np.abs(picture[tt:tb, tl:tr, 0].astype(int) - picture[tt:tb, tl:tr, 2]).max() > 10

    # Text: the use statement at the foot, tall enough to read; the model block beside the bars.
    footer = picture[key_image.FOOTER_TOP:key_image.FOOTER_TOP + key_image.TEXT_PX + 8]
    assert _ink_rows(footer, key_image.WARNING) >= 20
    info = picture[bars[3]:key_image.REFERENCE_BOX[3], key_image.RIGHT:]
    assert (info.max(axis=-1) > 120).sum() > 1000


def _lesion(label: str = "indeterminate") -> CapturedLesion:
    pixels = np.zeros((64, 80), dtype=np.float32)
    pixels[20:40, 30:50] = 100.0
    square = np.array([[30, 20], [50, 20], [50, 40], [30, 40], [30, 20]], dtype=float)
    view = ReferenceView(pixels, key_image.reading_window("CT"), "portal", (1.0, 1.0),
                         Outline(OutlineKind.BOX, square), ((10, 50), (20, 60)), (1, 0, 0, 0, 1, 0), "image 3")
    composite = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return CapturedLesion("L7", label, {"a_hcc": 0.2, "b": 0.5, "c": 0.3}, "fallback-centre-crop", composite,
                          None, ("arterial", "delayed", "pre"), view)


def test_render_without_heatmap_and_without_dejavu(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    algorithm = AlgorithmInfo("triphase tinycnn ct-histology", "f" * 64, "1.0")
    with_dejavu = key_image.render(_lesion(), algorithm, "not for diagnostic use")
    key_image.font.cache_clear()
    monkeypatch.setattr(key_image, "FONT_DIR", Path("/nonexistent"))
    try:
        with caplog.at_level(logging.WARNING):
            fallback = key_image.render(_lesion(), algorithm, "not for diagnostic use")
    finally:
        key_image.font.cache_clear()
    assert "fonts-dejavu-core" in caplog.text
    assert fallback.shape == with_dejavu.shape == (key_image.SIZE, key_image.SIZE, 3)
    bars = key_image.bars_box(3)
    for picture in (with_dejavu, fallback):
        assert _runs(picture[bars[1]:bars[3], bars[2] - 64 - 3]) == 3
        tl, tt, tr, tb = key_image.tile_box(Panel.GRAD_CAM)
        assert picture[tt + 5:tb - 5, tl + 5:tr - 5].max() > 100  # "not available" written in the empty tile
    assert key_image.shown_label("non_hcc_cc") == "non HCC CC"
    assert key_image.side_markers((1, 0, 0, 0, 1, 0)) == ("R", "L", "A", "P")


def test_contour_and_box_outlines() -> None:
    mask = np.zeros((40, 50), dtype=bool)
    rows, columns = np.ogrid[0:40, 0:50]
    mask[(rows - 20) ** 2 + (columns - 25) ** 2 <= 100] = True
    outline = contour(mask)
    assert np.allclose(outline[0], outline[-1])
    x, y = outline[:, 0], outline[:, 1]
    area = abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2
    assert abs(area - mask.sum()) / mask.sum() < 0.05
    assert abs(x.mean() - 25.5) < 0.5 and abs(y.mean() - 20.5) < 0.5  # pixel centre = index + 0.5

    header = pydicom.Dataset()
    header.ImagePositionPatient, header.ImageOrientationPatient = [-100, -50, 10], [1, 0, 0, 0, 1, 0]
    header.PixelSpacing, header.Rows, header.Columns, header.SliceThickness = [2, 1], 100, 200, 3
    lesion = Lesion("L1", RoiSource.RTSTRUCT, (0, 0, 10), (-10, -6, 8), (10, 6, 12), (0, 0, 10))
    box = box_on(ImagePlane.of(header), lesion)
    assert np.allclose(box[0], [90.5, 22.5]) and np.allclose(box[2], [110.5, 28.5])
