"""Split a series that holds several phases (or echoes) into one virtual series each.

Some scanners (and some site protocols) put every phase of a dynamic study into one series. The
sign is repeated slice positions; the way to separate them is AcquisitionNumber, else
TemporalPositionIdentifier, else clusters of acquisition time. Repeated positions that differ in
b-value are diffusion data and stay together. A gradient-echo series with two echo times at the
same positions is a dual-echo (in/opposed-phase) acquisition and is split by echo time; spin-echo
multi-echo data stays together.

A multi-frame instance (Enhanced or Legacy Converted CT/MR) holding several phases is split the
same way on its frames' functional-group facts: FrameAcquisitionNumber and TemporalPositionIndex
in the Frame Content macro, then StackID, then any dimension index that is not the slice position,
then FrameAcquisitionDateTime clusters, and last, when one series holds several multi-frame
instances at the same positions, by instance. The reason names the attribute used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from functools import partial

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
            parts = [series.with_images(sorted(g, key=_order), number) for number, g in sorted(groups.items())]
            return parts, f"one dual-echo series held {len(parts)} echoes, split by echo time"
        return [series], None
    for how, groups in _candidate_splits(series):
        if groups:
            parts = [series.with_images(sorted(g, key=_order), number) for number, g in sorted(groups.items())]
            return parts, f"one series held {len(parts)} acquisitions, split by {how}"
    return [series], None


def _order(image: ImageInfo) -> tuple[int, int]:
    return image.instance_number or 0, image.frame_number or 0


_POSITION_DIMENSIONS = {"ImagePositionPatient", "InStackPositionNumber", "SliceLocation", "PlanePositionSequence"}


def _dimension_splits(series: SeriesInfo) -> list[tuple[str, dict[int, list[ImageInfo]] | None]]:
    """One candidate per dimension index that does not index the slice position."""
    width = {len(i.dimension_values) for i in series.images}
    if len(width) != 1 or not (size := width.pop()):
        return []
    names = series.dimension_names if len(series.dimension_names) == size else ("",) * size
    return [(f"dimension index {k + 1} ({name or 'unnamed'}) in DimensionIndexValues",
             _stacks(_groups_by(series.images, partial(_dimension_value, k))))
            for k, name in enumerate(names) if name not in _POSITION_DIMENSIONS]


def _dimension_value(k: int, image: ImageInfo) -> int:
    return image.dimension_values[k]


def _stacks(groups: dict[int, list[ImageInfo]] | None) -> dict[int, list[ImageInfo]] | None:
    """Only groups of several slices each: an index that counts frames one by one is not a phase."""
    return groups if groups and all(len(g) > 1 for g in groups.values()) else None


def _candidate_splits(series: SeriesInfo) -> list[tuple[str, dict[int, list[ImageInfo]] | None]]:
    images = series.images
    frames = any(i.frame_number is not None for i in images)
    stacks = sorted({i.stack_id for i in images if i.stack_id is not None})
    instances = sorted({i.sop_instance_uid for i in images})
    return [
        ("FrameAcquisitionNumber (Frame Content)" if frames else "AcquisitionNumber",
         _groups_by(images, lambda i: i.acquisition_number)),
        ("TemporalPositionIndex (Frame Content)" if frames else "TemporalPositionIdentifier",
         _groups_by(images, lambda i: i.temporal_position)),
        ("StackID (Frame Content)",
         _groups_by(images, lambda i: stacks.index(i.stack_id) + 1 if i.stack_id is not None else None)),
        *(_dimension_splits(series) if frames else []),
        ("FrameAcquisitionDateTime (Frame Content)" if frames else "acquisition time", _time_clusters(images)),
        ("instance (one multi-frame instance per acquisition)",
         _stacks(_groups_by(images, lambda i: instances.index(i.sop_instance_uid) + 1 if i.frame_number else None))),
    ]
