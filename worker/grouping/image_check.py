"""An image check for CT phases: which acquisition shows the strongest vessel enhancement.

Headers can lie or be empty; the pixels cannot. The aorta and the spine do not move between
breath-holds, so on one axial level (the same patient z in every phase) the per-pixel minimum over
all phases is close to the unenhanced value; each phase's enhancement above that minimum peaks
in the aorta during the arterial phase (+250 HU and more), less in the portal and delayed phases,
and bone cancels out. The 99.9th percentile of that enhancement ranks the phases.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from scipy.ndimage import map_coordinates

from worker.grouping.frames import frame_pixels
from worker.grouping.series_info import ImageInfo, SeriesInfo

log = logging.getLogger(__name__)
PERCENTILE = 99.9


@dataclass(frozen=True)
class _Level:
    """The image of one series nearest the common level, with the geometry the check needs."""

    series: SeriesInfo
    image: ImageInfo
    position: tuple[float, float, float]
    spacing: tuple[float, float]


def _image_near(series: SeriesInfo, z: float) -> _Level | None:
    located = [(i, i.position, i.pixel_spacing) for i in series.images
               if i.position is not None and i.pixel_spacing is not None]
    if not located:
        return None
    image, position, spacing = min(located, key=lambda item: abs(item[1][2] - z))
    thickness = series.slice_thickness or 5.0
    if abs(position[2] - z) > max(thickness, 2.5):
        return None
    return _Level(series, image, position, spacing)


def _hu(image: ImageInfo) -> np.ndarray:
    """The image's values; of a multi-frame instance only its frame is read (the node runs this check)."""
    return frame_pixels(dcmread(image.path, stop_before_pixels=True), image.frame_number, source=image.path)


def _common_level(series: Sequence[SeriesInfo]) -> list[_Level] | None:
    """Each series' image at the middle of the z range they all cover, or None."""
    ranges = []
    for s in series:
        zs = [i.position[2] for i in s.images if i.position is not None]
        if zs:
            ranges.append((min(zs), max(zs)))
    if len(ranges) < 2:
        return None
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
        return None
    levels = [_image_near(s, (low + high) / 2) for s in series]
    return None if any(level is None for level in levels) else [level for level in levels if level is not None]


def peak_enhancement(series: Sequence[SeriesInfo]) -> dict[int, float]:
    """id(series) -> enhancement (HU) above the per-pixel minimum of all, on a common axial level.

    Empty when it cannot be measured (fewer than two series, no common level, undecodable pixels).
    """
    levels = _common_level(series)
    if levels is None:
        return {}
    try:
        planes = [_hu(level.image) for level in levels]
    except Exception as exc:  # noqa: BLE001 - undecodable pixels of any kind: no image check, not an error
        log.info("image check skipped: %s", type(exc).__name__)
        return {}
    ref, ref_plane = levels[0], planes[0]
    rows, cols = np.mgrid[0:ref_plane.shape[0], 0:ref_plane.shape[1]]
    x = ref.position[0] + cols * ref.spacing[1]
    y = ref.position[1] + rows * ref.spacing[0]
    stack = []
    for level, plane in zip(levels, planes, strict=True):
        c = (x - level.position[0]) / level.spacing[1]
        r = (y - level.position[1]) / level.spacing[0]
        stack.append(map_coordinates(plane, [r, c], order=1, mode="nearest"))
    values = np.stack(stack)
    baseline = values.min(axis=0)
    return {id(level.series): float(np.percentile(values[k] - baseline, PERCENTILE))
            for k, level in enumerate(levels)}
