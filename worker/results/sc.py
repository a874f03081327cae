"""The AI result as an RGB Secondary Capture: what every viewer shows, even one that ignores SR.

The picture is the composite the model saw, enlarged, with the lesion box, the heatmap blended in,
and a text band burned in: the prediction and every class probability, the model and its version,
where the lesion location came from, and "NOT FOR DIAGNOSTIC USE". BurnedInAnnotation is YES.
Patient and study attributes (and BodyPartExamined, whose absence makes dciodvfy report a
Laterality error) come from the source image.
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from worker.results import identity
from worker.results.algorithm import AlgorithmInfo
from worker.results.sr import INDETERMINATE, MANUFACTURER, processing_equipment, software_versions

PICTURE_SIZE = 512
BAND_HEIGHT = 180


@dataclass(frozen=True)
class CapturedLesion:
    lesion_id: str
    label: str
    probabilities: dict[str, float]
    roi_source: str
    composite: np.ndarray  # (H, W, 3) uint8, what the network saw
    heatmap: np.ndarray | None  # (H, W) in [0, 1]
    box: tuple[float, float, float, float] | None  # lesion box in composite pixels: row0, col0, row1, col1
    channels: tuple[str, str, str]


def _heat_colours(heat: np.ndarray) -> np.ndarray:
    """A simple blue-to-red colour ramp for a [0, 1] map (no plotting library needed)."""
    h = np.clip(heat, 0.0, 1.0)[..., None]
    return np.concatenate([np.clip(2 * h - 0.5, 0, 1), np.clip(1.5 - np.abs(4 * h - 2), 0, 1),
                           np.clip(1.5 - 2 * h, 0, 1)], axis=-1)


def render(lesion: CapturedLesion, algorithm: AlgorithmInfo) -> np.ndarray:
    """The burned-in picture, (PICTURE_SIZE + BAND_HEIGHT, PICTURE_SIZE, 3) uint8."""
    picture = Image.fromarray(lesion.composite).resize((PICTURE_SIZE, PICTURE_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(picture).astype(np.float32) / 255.0
    if lesion.heatmap is not None:
        heat = np.asarray(Image.fromarray((np.clip(lesion.heatmap, 0, 1) * 255).astype(np.uint8))
                          .resize((PICTURE_SIZE, PICTURE_SIZE), Image.Resampling.BILINEAR)).astype(np.float32) / 255.0
        alpha = 0.35 * heat[..., None]
        pixels = (1 - alpha) * pixels + alpha * _heat_colours(heat)
    canvas = Image.new("RGB", (PICTURE_SIZE, PICTURE_SIZE + BAND_HEIGHT), (0, 0, 0))
    canvas.paste(Image.fromarray((pixels * 255).astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if lesion.box is not None:
        scale = PICTURE_SIZE / lesion.composite.shape[0]
        r0, c0, r1, c1 = (v * scale for v in lesion.box)
        draw.rectangle([c0, r0, c1, r1], outline=(255, 255, 0), width=2)
    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    shown = "INDETERMINATE (model abstained)" if lesion.label == INDETERMINATE else lesion.label.replace("_", " ")
    items = [f"{k}: {v:.2f}" for k, v in lesion.probabilities.items()]
    probability_lines = ["  ".join(items[i:i + 3]) for i in range(0, len(items), 3)]
    lines = [
        f"Lesion {lesion.lesion_id}: {shown}",
        *probability_lines,
        f"R,G,B = {', '.join(lesion.channels)}   ROI: {lesion.roi_source}",
        f"{algorithm.name}  model {algorithm.version[:12]}  triphase {algorithm.software_version}",
        "NOT FOR DIAGNOSTIC USE - produced by an algorithm, research use only",
    ]
    y = PICTURE_SIZE + 6
    for number, line in enumerate(lines):
        colour = (255, 80, 80) if number == len(lines) - 1 else (255, 255, 255)
        draw.text((8, y), line[:90], fill=colour, font=font)
        y += 26
    return np.asarray(canvas, dtype=np.uint8)


def build_sc(study_uid: str, lesion: CapturedLesion, source: Dataset, *, algorithm: AlgorithmInfo,
             instance_number: int, series_number: int = 7702,
             series_description: str = "AI liver lesion composite (not for diagnostic use)") -> Dataset:
    """The Secondary Capture of one lesion, in the source study, with deterministic UIDs."""
    if "BodyPartExamined" not in source:
        source = source.copy()
        source.BodyPartExamined = "ABDOMEN"
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=render(lesion, algorithm),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=identity.sc_series_uid(study_uid, algorithm.version),
        series_number=series_number,
        sop_instance_uid=identity.sc_uid(study_uid, algorithm.version, lesion.lesion_id),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        manufacturer_model_name=algorithm.name[:64],
        software_versions=software_versions(algorithm),
        contributing_equipment=[processing_equipment(algorithm)],
    )
    sc.BodyPartExamined = source.BodyPartExamined
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = series_description
    sc.ImageComments = f"{lesion.label}; model {algorithm.version[:12]}; not for diagnostic use"
    sc.DerivationDescription = (f"RGB composite of {', '.join(lesion.channels)} by {algorithm.name}; "
                                "not for diagnostic use")[:1024]
    return sc
