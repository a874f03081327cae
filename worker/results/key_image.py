"""The Secondary Capture's picture, laid out like a radiologist's key image.

A reader opening the result in the PACS must see where the lesion is and what the model looked at
without reading the SR: the full reference slice at a reading window with the lesion outlined,
the three acquisitions that became the colour channels (each named), the composite the network
saw, the Grad-CAM beside it (never over the anatomy), every class probability as a bar, and who
made it, with the not-for-diagnostic-use statement. Text is at least 22 px (about 16 px capital
height) on a 1024 px square, legible at the zoom a PACS opens it with.

Pillow draws it with DejaVu Sans (Debian's fonts-dejavu-core); without that file the text falls
back, with a warning, to Pillow's built-in scalable font, so the picture is always made.
"""

from __future__ import annotations

import functools
import logging
import textwrap
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from models.compositing import Window
from worker.results.algorithm import AlgorithmInfo
from worker.results.outline import Outline, OutlineKind
from worker.results.sr import INDETERMINATE

log = logging.getLogger(__name__)

SIZE = 1024
MARGIN = 12
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
TEXT_PX = 22
TITLE_PX = 30
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
DIM = (170, 170, 170)
WARNING = (255, 176, 0)
OUTLINE = (255, 230, 0)
CROP = (0, 210, 255)
BAR = (70, 130, 200)
BAR_PREDICTED = (255, 150, 40)
TRACK = (55, 55, 55)
CHANNEL_TINTS = ((255, 110, 110), (110, 235, 110), (120, 160, 255))

#: How roles read in a radiology department; unlisted roles show their name with spaces.
ROLE_NAMES = {"pre": "pre-contrast", "portal": "portal venous", "t2_haste": "T2 HASTE", "t1_in": "T1 in-phase",
              "t1_out": "T1 opposed-phase"}

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


class Panel(StrEnum):
    REFERENCE = "reference"
    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    COMPOSITE = "composite"
    GRAD_CAM = "grad-cam"
    BARS = "bars"
    INFO = "info"
    FOOTER = "footer"


TILE = 188
TILE_TOP = 730
REFERENCE_BOX: Box = (MARGIN, 124, MARGIN + 560, 124 + 560)
RIGHT = REFERENCE_BOX[2] + 24
BARS_TOP = 124
BAR_ROW = 40
TILE_PANELS = (Panel.RED, Panel.GREEN, Panel.BLUE, Panel.COMPOSITE, Panel.GRAD_CAM)
FOOTER_TOP = TILE_TOP + TILE + 14


def tile_box(panel: Panel) -> Box:
    """Where a crop tile (channel, composite or Grad-CAM) lies on the picture."""
    left = MARGIN + TILE_PANELS.index(panel) * (TILE + 12)
    return left, TILE_TOP, left + TILE, TILE_TOP + TILE


def bars_box(classes: int) -> Box:
    return RIGHT, BARS_TOP, SIZE - MARGIN, BARS_TOP + classes * BAR_ROW


def role_name(role: str) -> str:
    return ROLE_NAMES.get(role, role.replace("_", " "))


@dataclass(frozen=True)
class ReferenceView:
    """The full slice the lesion was found on, in modality values (HU for CT), and what to draw on it."""

    pixels: np.ndarray  # (rows, columns)
    window: Window
    role: str
    pixel_spacing: tuple[float, float]  # between rows, between columns (mm), for the aspect ratio
    outline: Outline  # SCOORD on this image
    crop: tuple[tuple[int, int], tuple[int, int]]  # rows, columns of the crop the tiles show
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient, for the side markers
    caption: str = ""  # e.g. "image 9"


@dataclass(frozen=True)
class CapturedLesion:
    lesion_id: str
    label: str  # a class, or "indeterminate"
    probabilities: dict[str, float]
    roi_source: str
    composite: np.ndarray  # (H, W, 3) uint8, what the network saw
    heatmap: np.ndarray | None  # (H, W) in [0, 1]
    channels: tuple[str, str, str]
    reference: ReferenceView


@functools.cache
def font(size: int, bold: bool = False) -> Font:
    """DejaVu Sans at ``size`` px, or (loudly) Pillow's built-in scalable font when it is not installed."""
    path = FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    log.warning("%s is missing (Debian package fonts-dejavu-core): the Secondary Capture uses Pillow's "
                "built-in font", path)
    return ImageFont.load_default(size=size)


def fit(box: Box, shape: tuple[int, int], spacing: tuple[float, float] = (1.0, 1.0)) -> Box:
    """The largest rectangle with the image's physical aspect ratio, centred in ``box``."""
    height_mm, width_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    width, height = box[2] - box[0], box[3] - box[1]
    scale = min(width / width_mm, height / height_mm)
    w, h = max(int(round(width_mm * scale)), 1), max(int(round(height_mm * scale)), 1)
    left, top = box[0] + (width - w) // 2, box[1] + (height - h) // 2
    return left, top, left + w, top + h


def reference_placement(view: ReferenceView) -> Box:
    """Where the reference slice lies on the picture."""
    return fit(REFERENCE_BOX, (view.pixels.shape[0], view.pixels.shape[1]), view.pixel_spacing)


CT_READING_WINDOW = Window(centre=70.0, width=180.0)  # a liver window, in HU
MR_READING_WINDOW = Window(percentiles=(1.0, 99.5))


def reading_window(modality: str) -> Window:
    """The window a reader looks at the reference slice with: liver window for CT, percentiles for MR."""
    return CT_READING_WINDOW if modality == "CT" else MR_READING_WINDOW


def windowed(view: ReferenceView) -> np.ndarray:
    """The slice as 8-bit grey at the reading window."""
    unit = view.window.apply(np.asarray(view.pixels, dtype=np.float32))
    grey: np.ndarray = np.clip(np.round(unit * 255.0), 0, 255).astype(np.uint8)
    return grey


def window_caption(window: Window) -> str:
    if window.percentiles is not None:
        low, high = window.percentiles
        return f"window p{low:g}-p{high:g}"
    return f"W {window.width:g} L {window.centre:g}"


def _heat_colours(heat: np.ndarray) -> np.ndarray:
    """A blue-to-red colour ramp for a [0, 1] map (no plotting library needed)."""
    h = np.clip(heat, 0.0, 1.0)[..., None]
    return np.concatenate([np.clip(2 * h - 0.5, 0, 1), np.clip(1.5 - np.abs(4 * h - 2), 0, 1),
                           np.clip(1.5 - 2 * h, 0, 1)], axis=-1)


def _resized(pixels: np.ndarray, size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float],
                      colour: tuple[int, int, int], dash: int = 8) -> None:
    left, top, right, bottom = box
    for start, end in (((left, top), (right, top)), ((right, top), (right, bottom)),
                       ((right, bottom), (left, bottom)), ((left, bottom), (left, top))):
        length = float(np.hypot(end[0] - start[0], end[1] - start[1]))
        for step in np.arange(0.0, length, 2 * dash):
            a, b = step / max(length, 1e-6), min(step + dash, length) / max(length, 1e-6)
            draw.line([(start[0] + a * (end[0] - start[0]), start[1] + a * (end[1] - start[1])),
                       (start[0] + b * (end[0] - start[0]), start[1] + b * (end[1] - start[1]))], fill=colour, width=2)


def side_markers(orientation: tuple[float, ...] | None) -> tuple[str, str, str, str]:
    """Patient directions at the left, right, top and bottom edges (LPS axes), or blanks."""
    if orientation is None or len(orientation) != 6:
        return "", "", "", ""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))

    def towards(vector: tuple[float, ...]) -> tuple[str, str]:
        axis = int(np.argmax(np.abs(vector)))
        negative, positive = letters[axis]
        return (negative, positive) if vector[axis] > 0 else (positive, negative)

    left, right = towards(orientation[:3])
    top, bottom = towards(orientation[3:])
    return left, right, top, bottom


def _draw_reference(canvas: Image.Image, draw: ImageDraw.ImageDraw, lesion: CapturedLesion) -> None:
    view = lesion.reference
    left, top, right, bottom = reference_placement(view)
    canvas.paste(_resized(windowed(view), (right - left, bottom - top)), (left, top))
    sx, sy = (right - left) / view.pixels.shape[1], (bottom - top) / view.pixels.shape[0]
    (r0, r1), (c0, c1) = view.crop
    _dashed_rectangle(draw, (left + c0 * sx, top + r0 * sy, left + c1 * sx, top + r1 * sy), CROP)
    points = [(left + c * sx, top + r * sy) for c, r in view.outline.polyline]
    draw.line(points, fill=OUTLINE, width=3, joint="curve")
    tag = (min(left + c1 * sx + 4, right - 60), max(top + r0 * sy, top + TEXT_PX + 4))
    draw.text(tag, lesion.lesion_id, fill=OUTLINE, font=font(TEXT_PX, bold=True), anchor="lb")
    marker = font(TEXT_PX, bold=True)
    l_side, r_side, t_side, b_side = side_markers(view.orientation)
    middle_x, middle_y = (left + right) // 2, (top + bottom) // 2
    draw.text((left + 6, middle_y), l_side, fill=TEXT, font=marker, anchor="lm")
    draw.text((right - 6, middle_y), r_side, fill=TEXT, font=marker, anchor="rm")
    draw.text((middle_x, top + 4), t_side, fill=TEXT, font=marker, anchor="mt")
    draw.text((middle_x, bottom - 4), b_side, fill=TEXT, font=marker, anchor="mb")
    caption = ", ".join(part for part in (role_name(view.role), view.caption) if part)
    caption = caption[:1].upper() + caption[1:]
    draw.text((REFERENCE_BOX[0], REFERENCE_BOX[1] - 30), caption, fill=TEXT, font=font(TEXT_PX))
    draw.text((REFERENCE_BOX[2], REFERENCE_BOX[1] - 30), window_caption(view.window), fill=DIM, font=font(TEXT_PX),
              anchor="ra")


def _grad_cam_tile(lesion: CapturedLesion) -> np.ndarray | None:
    """The heat map over a dimmed grey copy of the composite, so it can be placed without hiding anything."""
    if lesion.heatmap is None:
        return None
    grey = lesion.composite.astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    heat = np.asarray(_resized((np.clip(lesion.heatmap, 0, 1) * 255).astype(np.uint8),
                               (grey.shape[1], grey.shape[0])), dtype=np.float32) / 255.0
    alpha = 0.35 + 0.55 * heat[..., None]
    blended = (1 - alpha) * grey * 0.8 + alpha * _heat_colours(heat)
    tile: np.ndarray = np.clip(np.round(blended * 255), 0, 255).astype(np.uint8)
    return tile


def _draw_tiles(canvas: Image.Image, draw: ImageDraw.ImageDraw, lesion: CapturedLesion) -> None:
    labels = [f"{channel}: {role_name(role)}" for channel, role in zip("RGB", lesion.channels, strict=True)]
    images: list[np.ndarray | None] = [lesion.composite[..., i] for i in range(3)]
    images += [lesion.composite, _grad_cam_tile(lesion)]
    colours = [*CHANNEL_TINTS, TEXT, TEXT]
    for panel, label, image, colour in zip(TILE_PANELS, [*labels, "RGB composite", "Grad-CAM"], images, colours,
                                           strict=True):
        left, top, right, bottom = tile_box(panel)
        draw.text((left, top - 30), label, fill=colour, font=font(TEXT_PX))
        if image is None:
            draw.rectangle((left, top, right - 1, bottom - 1), outline=TRACK, width=2)
            draw.text(((left + right) // 2, (top + bottom) // 2), "not available", fill=DIM, font=font(TEXT_PX),
                      anchor="mm")
            continue
        canvas.paste(_resized(image, (right - left, bottom - top)), (left, top))
        if panel in (Panel.COMPOSITE, Panel.GRAD_CAM):
            _draw_outline_on_tile(draw, lesion, (left, top, right, bottom))


def _draw_outline_on_tile(draw: ImageDraw.ImageDraw, lesion: CapturedLesion, box: Box) -> None:
    """The lesion's outline on a crop tile, so the tile shows which part of the crop is the lesion."""
    (r0, r1), (c0, c1) = lesion.reference.crop
    sx, sy = (box[2] - box[0]) / max(c1 - c0, 1), (box[3] - box[1]) / max(r1 - r0, 1)
    points = [(box[0] + (c - c0) * sx, box[1] + (r - r0) * sy) for c, r in lesion.reference.outline.polyline]
    draw.line(points, fill=OUTLINE, width=2, joint="curve")


ABBREVIATIONS = {"hcc": "HCC", "cc": "CC"}


def shown_label(label: str) -> str:
    """A class as a reader writes it: ``non_hcc_cc`` -> ``non HCC CC``."""
    if label == INDETERMINATE:
        return "indeterminate (the model abstained)"
    return " ".join(ABBREVIATIONS.get(word, word) for word in label.split("_"))


def _draw_bars(draw: ImageDraw.ImageDraw, lesion: CapturedLesion) -> int:
    """One bar per class, the predicted one highlighted; returns the y below the chart."""
    left, top, right, _ = bars_box(len(lesion.probabilities))
    draw.text((left, top - 30), "Class probability", fill=TEXT, font=font(TEXT_PX, bold=True))
    names = {name: shown_label(name) for name in lesion.probabilities}
    widest = max(draw.textlength(text, font=font(TEXT_PX, bold=True)) for text in names.values())
    name_width, value_width = min(int(widest) + 14, (right - left) // 2), 64
    bar_left, bar_right = left + name_width, right - value_width
    for row, (name, probability) in enumerate(lesion.probabilities.items()):
        y = top + row * BAR_ROW
        predicted = name == lesion.label
        draw.text((left, y + BAR_ROW // 2), names[name], fill=TEXT if predicted else DIM,
                  font=font(TEXT_PX, bold=predicted), anchor="lm")
        draw.rectangle((bar_left, y + 8, bar_right, y + BAR_ROW - 8), fill=TRACK)
        filled = bar_left + max(int(round(float(probability) * (bar_right - bar_left))), 3)
        draw.rectangle((bar_left, y + 8, filled, y + BAR_ROW - 8), fill=BAR_PREDICTED if predicted else BAR)
        draw.text((right, y + BAR_ROW // 2), f"{float(probability):.2f}", fill=TEXT, font=font(TEXT_PX),
                  anchor="rm")
    return top + len(lesion.probabilities) * BAR_ROW


def _wrapped(draw: ImageDraw.ImageDraw, text: str, width: int, typeface: Font) -> list[str]:
    """``text`` broken into lines no wider than ``width`` pixels."""
    chars = max(int(width / max(draw.textlength("n", font=typeface), 1.0)), 8)
    while chars > 8:
        lines = textwrap.wrap(text, chars, break_on_hyphens=False)
        if all(draw.textlength(line, font=typeface) <= width for line in lines):
            return lines
        chars -= 1
    return textwrap.wrap(text, chars, break_on_hyphens=False)


def info_lines(lesion: CapturedLesion, algorithm: AlgorithmInfo) -> list[str]:
    # No-break spaces keep each role name on one line when the text wraps.
    roles = ", ".join(f"{c}\u00a0{role_name(r)}".replace(" ", "\u00a0") for c, r in zip("RGB", lesion.channels,
                                                                                       strict=True))
    return [f"Model: {algorithm.name}", f"Version: {algorithm.version[:12]}",
            f"Software: triphase {algorithm.software_version}", f"Channels: {roles}",
            f"Reference: {role_name(lesion.reference.role)}",
            f"Outline: {outline_caption(lesion)}"]


def outline_caption(lesion: CapturedLesion) -> str:
    if lesion.reference.outline.kind is OutlineKind.SEG_CONTOUR:
        return "SEG contour"
    return f"lesion box ({lesion.roi_source})"


def _draw_info(draw: ImageDraw.ImageDraw, lesion: CapturedLesion, algorithm: AlgorithmInfo, top: int) -> None:
    y = top + 18
    width = SIZE - MARGIN - RIGHT
    for line in info_lines(lesion, algorithm):
        for piece in _wrapped(draw, line, width, font(TEXT_PX)):
            if y + TEXT_PX > REFERENCE_BOX[3]:
                return
            draw.text((RIGHT, y), piece, fill=DIM, font=font(TEXT_PX))
            y += TEXT_PX + 8


def _draw_header(draw: ImageDraw.ImageDraw, lesion: CapturedLesion) -> None:
    probability = lesion.probabilities.get(lesion.label)
    result = shown_label(lesion.label) + ("" if probability is None else f"  ({probability:.2f})")
    draw.text((MARGIN, 10), f"AI result, lesion {lesion.lesion_id}: {result}", fill=TEXT,
              font=font(TITLE_PX, bold=True))
    draw.text((MARGIN, 52), "NOT FOR DIAGNOSTIC USE", fill=WARNING, font=font(TEXT_PX, bold=True))


def _draw_footer(draw: ImageDraw.ImageDraw, statement: str) -> None:
    y = FOOTER_TOP
    for line in _wrapped(draw, statement, SIZE - 2 * MARGIN, font(TEXT_PX, bold=True)):
        draw.text((MARGIN, y), line, fill=WARNING, font=font(TEXT_PX, bold=True))
        y += TEXT_PX + 8


def render(lesion: CapturedLesion, algorithm: AlgorithmInfo, statement: str) -> np.ndarray:
    """The key image, (SIZE, SIZE, 3) uint8; ``statement`` is the use statement printed at the foot."""
    canvas = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    _draw_header(draw, lesion)
    _draw_reference(canvas, draw, lesion)
    below_bars = _draw_bars(draw, lesion)
    _draw_info(draw, lesion, algorithm, below_bars)
    _draw_tiles(canvas, draw, lesion)
    _draw_footer(draw, statement)
    return np.asarray(canvas, dtype=np.uint8)
