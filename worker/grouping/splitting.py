"""Split a series that holds several phases (or echoes) into one virtual series each.

Some scanners (and some site protocols) put every phase of a dynamic study into one series. The
sign is repeated slice positions; the way to separate them is AcquisitionNumber, else
TemporalPositionIdentifier, else clusters of acquisition time. Repeated positions that differ in
b-value are diffusion data and stay together. A gradient-echo series with two echo times at the
same positions is a dual-echo (in/opposed-phase) acquisition and is split by echo time; spin-echo
multi-echo data stays together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from worker.grouping.series_info import ImageInfo, SeriesInfo

TIME_GAP_S = 8.0  # two phases are at least this far apart; slices of one phase are closer


def _position_key(image: ImageInfo) -> tuple[float, ...] | None:
    return None if image.position is None else tuple(round(v, 1) for v in image.position)


def has_repeated_positions(images: list[ImageInfo]) -> bool:
    keys = [_position_key(i) for i in images]
    known = [k for k in keys if k is not None]
    return len(known) > len(set(known)) and len(known) == len(keys)


def _groups_by(images: list[ImageInfo], key: Callable[[ImageInfo], int | None]) -> dict[int, list[ImageInfo]] | None:
    groups: dict[int, list[ImageInfo]] = defaultdict(list)
    for image in images:
        value = key(image)
        if value is None:
            return None
        groups[value].append(image)
    if len(groups) < 2 or any(has_repeated_positions(g) for g in groups.values()):
        return None
    return dict(groups)


def _time_clusters(images: list[ImageInfo]) -> dict[int, list[ImageInfo]] | None:
    if any(i.acquisition_seconds is None for i in images):
        return None
    ordered = sorted(images, key=lambda i: i.acquisition_seconds or 0.0)
    clusters: list[list[ImageInfo]] = [[ordered[0]]]
    for image in ordered[1:]:
        if (image.acquisition_seconds or 0.0) - (clusters[-1][-1].acquisition_seconds or 0.0) > TIME_GAP_S:
            clusters.append([])
        clusters[-1].append(image)
    groups = {n + 1: c for n, c in enumerate(clusters)}
    if len(groups) < 2 or any(has_repeated_positions(g) for g in groups.values()):
        return None
    return groups


def split_phases(series: SeriesInfo) -> tuple[list[SeriesInfo], str | None]:
    """The series itself, or one virtual series per phase; with the reason when split."""
    images = series.images
    if not has_repeated_positions(images):
        return [series], None
    if len(series.b_values) > 1:
        return [series], None  # several b-values at the same positions: diffusion
    echoes = sorted({round(i.echo_time, 2) for i in images if i.echo_time is not None})
    if len(echoes) > 1:
        if "GR" not in series.scanning_sequence:
            return [series], None  # spin-echo multi-echo data: one role
        groups = _groups_by(images, lambda i: echoes.index(round(i.echo_time, 2)) + 1
                            if i.echo_time is not None else None)
        if groups:
            parts = [series.with_images(sorted(g, key=lambda i: i.instance_number or 0), number)
                     for number, g in sorted(groups.items())]
            return parts, f"one dual-echo series held {len(parts)} echoes, split by echo time"
        return [series], None
    for how, groups in (
        ("AcquisitionNumber", _groups_by(images, lambda i: i.acquisition_number)),
        ("TemporalPositionIdentifier", _groups_by(images, lambda i: i.temporal_position)),
        ("acquisition time", _time_clusters(images)),
    ):
        if groups:
            parts = [series.with_images(sorted(g, key=lambda i: i.instance_number or 0), number)
                     for number, g in sorted(groups.items())]
            return parts, f"one series held {len(parts)} acquisitions, split by {how}"
    return [series], None
