"""From a study on disk to one composite per lesion: group -> load -> align -> locate -> composite.

This is the one path that turns DICOM into network input; training from studies and inference
both call it, so a model never sees composites made differently from the ones it learnt on.
Every way a study can fail to yield composites is a typed :class:`NoCompositesError` with a reason the
audit keeps (missing or ambiguous roles, mixed frames of reference, undecodable pixels, no
annotation when the fallback is "skip"), never a crash or a silent guess.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from models.compositing import DEFAULT_RECIPES, ChannelRecipe, Composite, crop_box, make_composite
from worker.alignment import Motion, align, box_around, displaced
from worker.grouping import Grouping, Outcome, Rules
from worker.grouping.matching import group_study
from worker.grouping.series_info import SeriesInfo, scan_studies
from worker.roi import (
    Lesion,
    RoiSource,
    annotation_files,
    fallback_lesion,
    geometry_index,
    lesions_from_rtstruct,
    lesions_from_seg,
    lesions_from_sr,
)
from worker.volumes import Volume, VolumeError, load_volume

log = logging.getLogger(__name__)

Fallback = Literal["centre", "skip"]
FALLBACK_HALF_SIZE_MM = 40.0
REGISTRATION_MARGIN_MM = 25.0


@dataclass(frozen=True)
class LesionComposite:
    lesion: Lesion
    composite: Composite
    slice_index: int  # axial slice of the reference grid
    crop: tuple[tuple[int, int], tuple[int, int]]  # (row start, stop), (column start, stop)
    motion: dict[str, Motion | None]
    source_images: dict[str, str]  # role -> SOP Instance UID of the source image nearest the slice
    reference_image: str = ""  # SOP Instance UID of the reference role's image at this slice
    source_frames: dict[str, int] = field(default_factory=dict)  # role -> its frame, for multi-frame sources
    reference_frame: int | None = None  # the frame of ``reference_image`` when it is a multi-frame instance


@dataclass
class StudyComposites:
    study_uid: str
    grouping: Grouping
    recipe: ChannelRecipe
    composites: list[LesionComposite] = field(default_factory=list)
    skipped: str | None = None  # why no composite was made
    reference_role: str = ""

    @property
    def roi_source(self) -> str | None:
        return self.composites[0].lesion.source.value if self.composites else None

    def sidecar(self, item: LesionComposite) -> dict[str, object]:
        roles = {role: None if m is None else {"series": m.series.series_uid,
                                               "acquisition_number": m.series.acquisition_number}
                 for role, m in self.grouping.roles.items() if role in (*self.recipe.channels, self.reference_role)}
        return {
            "study_uid": self.study_uid, "task": self.grouping.task, "lesion_id": item.lesion.lesion_id,
            "roi_source": item.lesion.source.value, "recipe": self.recipe.as_json(),
            "channels": dict(zip(("R", "G", "B"), self.recipe.channels, strict=True)),
            "roles": roles, "reference_role": self.reference_role, "slice_index": item.slice_index,
            "crop": [list(item.crop[0]), list(item.crop[1])],
            "motion": {role: None if m is None else m.as_json() for role, m in item.motion.items()},
            "source_images": item.source_images,
            "source_frames": item.source_frames,
            "reference_image": {"sop_instance_uid": item.reference_image, "frame": item.reference_frame},
            "lesion": {"centre_mm": [round(v, 2) for v in item.lesion.centre_mm],
                       "size_mm": round(item.lesion.size_mm, 1)},
        }


class NoCompositesError(Exception):
    """A study cannot give composites; the message is the reason kept in the audit."""


def _needed_roles(grouping: Grouping, recipe: ChannelRecipe) -> None:
    if grouping.outcome is Outcome.NOT_APPLICABLE:
        raise NoCompositesError("not applicable: " + "; ".join(grouping.problems))
    if grouping.outcome is Outcome.AMBIGUOUS:
        raise NoCompositesError("ambiguous roles: " + "; ".join(grouping.problems))
    missing = [r for r in recipe.channels if grouping.roles.get(r) is None]
    if missing:
        raise NoCompositesError(f"missing role(s) {', '.join(missing)} needed by the channel recipe")


def _series_of(grouping: Grouping, role: str) -> SeriesInfo:
    match = grouping.roles.get(role)
    if match is None:
        raise NoCompositesError(f"no series for role {role}")
    return match.series


def _nearest_source_image(grouping: Grouping, role: str, point_mm: np.ndarray) -> tuple[str, int | None]:
    """(SOP Instance UID, frame number or None) of the role's image or frame nearest the slice."""
    match = grouping.roles[role]
    assert match is not None
    images = [i for i in match.series.images if i.position is not None and i.orientation is not None]
    if not images:
        return "", None
    orientation = np.asarray(images[0].orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    nearest = min(images, key=lambda i: abs(float(np.dot(normal, np.asarray(i.position) - point_mm))))
    return nearest.reference


Displacement = dict[str, tuple[float, float, float]]
"""Experiments only: role -> (slice, row, column) shift in mm applied on the reference grid after alignment."""


def _lesion_composites(lesion: Lesion, reference: Volume, volumes: dict[str, Volume], grouping: Grouping,
                       recipe: ChannelRecipe, modality: str, size: int, register: bool,
                       neighbours: int, reference_role: str,
                       displace: Displacement | None = None) -> list[LesionComposite]:
    """The composite of the lesion's largest axial slice (and ``neighbours`` slices each side)."""
    extent = np.subtract(lesion.box_max_mm, lesion.box_min_mm)
    half_mm = max(float(extent.max()) / 2 * (1 + recipe.margin), recipe.min_crop_mm / 2)
    box = box_around(reference, np.asarray(lesion.centre_mm), half_mm + REGISTRATION_MARGIN_MM)
    k = int(round(reference.to_index(np.asarray(lesion.largest_slice_mm)[None, :])[0][0]))
    if not 0 <= k < reference.shape[0]:
        raise NoCompositesError(f"lesion {lesion.lesion_id} lies outside the reference series")
    first, last = max(k - neighbours, 0), min(k + neighbours, reference.shape[0] - 1)
    # Only the composited slices are resampled; a deliberate displacement needs the whole volume.
    start, region = (0, None) if displace else (first, (slice(first, last + 1), slice(None), slice(None)))
    aligned: dict[str, np.ndarray] = {}
    motion: dict[str, Motion | None] = {}
    for role in recipe.channels:
        if volumes[role] is reference:
            aligned[role], motion[role] = reference.voxels[region or ...], None
        else:
            aligned[role], motion[role] = align(reference, volumes[role], box, register=register, region=region)
        if displace and role in displace:
            aligned[role] = displaced(aligned[role], reference.spacing, displace[role])
    centre = reference.to_index(np.asarray(lesion.centre_mm)[None, :])[0]
    spacing = reference.spacing
    crop = crop_box(reference.shape[1:], (centre[1], centre[2]), (half_mm / spacing[1], half_mm / spacing[2]))
    out = []
    for index in range(first, last + 1):
        planes = {role: volume[index - start] for role, volume in aligned.items()}
        composite = make_composite(planes, recipe, modality=modality, size=size, crop=crop)
        slice_point = reference.to_patient(np.array([[index, centre[1], centre[2]]]))[0]
        sources = {role: _nearest_source_image(grouping, role, slice_point) for role in recipe.channels}
        reference_uid, reference_frame = _nearest_source_image(grouping, reference_role, slice_point)
        out.append(LesionComposite(lesion, composite, index,
                                   ((crop[0].start, crop[0].stop), (crop[1].start, crop[1].stop)), motion,
                                   {role: uid for role, (uid, _) in sources.items()},
                                   reference_image=reference_uid, reference_frame=reference_frame,
                                   source_frames={role: frame for role, (_, frame) in sources.items()
                                                  if frame is not None}))
    return out


def find_lesions(series: list[SeriesInfo], grouping: Grouping) -> list[Lesion]:
    """Lesions from the study's annotations, in order of preference: SEG, RTSTRUCT, SR regions."""
    annotations = annotation_files(series)
    geometry = geometry_index(m.series for m in grouping.roles.values() if m is not None)
    lesions = [lesion for path in annotations["seg"] for lesion in lesions_from_seg(path, geometry)]
    if not lesions:
        lesions = [lesion for path in annotations["rtstruct"] for lesion in lesions_from_rtstruct(path)]
    if not lesions and annotations["sr"]:
        lesions = [lesion for path in annotations["sr"] for lesion in lesions_from_sr(path, geometry)]
    return lesions


def composites_for_study(study_uid: str, series: list[SeriesInfo], rules: Rules, *,
                         recipe: ChannelRecipe | None = None, size: int = 224, register: bool = True,
                         fallback: Fallback = "centre", neighbours: int = 0,
                         displace: Displacement | None = None, grouping: Grouping | None = None) -> StudyComposites:
    """One composite per lesion; ``grouping`` is the study's, when the caller has grouped it already."""
    grouping = grouping or group_study(study_uid, series, rules)
    task = grouping.task
    recipe = recipe or DEFAULT_RECIPES.get(task or "", DEFAULT_RECIPES["ct-histology"])
    result = StudyComposites(study_uid, grouping, recipe)
    try:
        _needed_roles(grouping, recipe)
        assert task is not None
        reference_role = rules.task[task].reference
        if grouping.roles.get(reference_role) is None:
            reference_role = recipe.channels[0]
        result.reference_role = reference_role
        roles = {reference_role, *recipe.channels}
        try:
            volumes = {role: load_volume(_series_of(grouping, role)) for role in roles}
        except VolumeError as exc:
            raise NoCompositesError(str(exc)) from exc
        frames = {v.frame_of_reference for v in volumes.values()} - {None}
        if len(frames) > 1:
            raise NoCompositesError("the roles are in different frames of reference; they cannot be aligned")
        reference = volumes[reference_role]
        lesions = find_lesions(series, grouping)
        if not lesions:
            if fallback == "skip":
                raise NoCompositesError("no lesion annotation (SEG) in the study and the fallback is 'skip'")
            centre = reference.to_patient(np.array([[s / 2 for s in reference.shape]]))[0]
            lesions = [fallback_lesion(centre, FALLBACK_HALF_SIZE_MM)]
            log.warning("study without annotation: using the %s fallback", RoiSource.FALLBACK_CENTRE.value)
        modality = _series_of(grouping, reference_role).modality
        for lesion in lesions:
            result.composites.extend(_lesion_composites(lesion, reference, volumes, grouping, recipe, modality,
                                                        size, register, neighbours, reference_role, displace))
    except NoCompositesError as exc:
        result.skipped = str(exc)
    return result


def build_composites(paths: Iterable[Path], rules: Rules, *, recipe: ChannelRecipe | None = None, size: int = 224,
                     register: bool = True, fallback: Fallback = "centre",
                     neighbours: int = 0, displace: Displacement | None = None) -> dict[str, StudyComposites]:
    """Composites for every study found under ``paths`` (headers are read once)."""
    scan = scan_studies(paths)
    return {uid: composites_for_study(uid, series, rules, recipe=recipe, size=size, register=register,
                                      fallback=fallback, neighbours=neighbours, displace=displace)
            for uid, series in sorted(scan.series.items())}
