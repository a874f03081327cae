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

import numpy as np
from pydicom import dcmread

from worker.grouping.series_info import ImageInfo, SeriesInfo

log = logging.getLogger(__name__)
PERCENTILE = 99.9


def _image_near(series: SeriesInfo, z: float) -> ImageInfo | None:
    images = [i for i in series.images if i.position is not None and i.pixel_spacing is not None]
    if not images:
        return None
    best = min(images, key=lambda i: abs(i.position[2] - z))  # type: ignore[index]
    thickness = series.slice_thickness or 5.0
    return best if abs(best.position[2] - z) <= max(thickness, 2.5) else None  # type: ignore[index]


def _hu(image: ImageInfo) -> np.ndarray:
    ds = dcmread(image.path)
    return ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)


def peak_enhancement(series: Sequence[SeriesInfo]) -> dict[int, float]:
    """id(series) -> enhancement (HU) above the per-pixel minimum of all, on a common axial level.

    Empty when it cannot be measured (fewer than two series, no common level, undecodable pixels).
    """
    from scipy.ndimage import map_coordinates  # noqa: PLC0415

    ranges = []
    for s in series:
        zs = [i.position[2] for i in s.images if i.position is not None]
        if zs:
            ranges.append((min(zs), max(zs)))
    if len(ranges) < 2:
        return {}
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
        return {}
    z = (low + high) / 2
    chosen = [(s, _image_near(s, z)) for s in series]
    if any(image is None for _, image in chosen):
        return {}
    try:
        planes = [(s, image, _hu(image)) for s, image in chosen]  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - undecodable pixels: no image check, not an error
        log.info("image check skipped: %s", type(exc).__name__)
        return {}
    _, ref_image, ref = planes[0]
    rows, cols = np.mgrid[0:ref.shape[0], 0:ref.shape[1]]
    ref_spacing = ref_image.pixel_spacing
    x = ref_image.position[0] + cols * ref_spacing[1]  # type: ignore[index]
    y = ref_image.position[1] + rows * ref_spacing[0]  # type: ignore[index]
    stack = []
    for _, image, plane in planes:
        spacing = image.pixel_spacing
        c = (x - image.position[0]) / spacing[1]  # type: ignore[index]
        r = (y - image.position[1]) / spacing[0]  # type: ignore[index]
        stack.append(map_coordinates(plane, [r, c], order=1, mode="nearest"))
    values = np.stack(stack)
    baseline = values.min(axis=0)
    return {id(s): float(np.percentile(values[k] - baseline, PERCENTILE)) for k, (s, _, _) in enumerate(planes)}
