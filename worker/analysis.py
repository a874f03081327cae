"""The whole method on one study, without servers: composites -> prediction -> SR + SC files.

``triphase analyze`` and the Celery task both call :func:`analyse_study`; what the task adds is
only where the files come from and where the results go. A study that cannot be analysed (missing
or ambiguous phases, no usable geometry) is a typed skip with the reason, not an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from models.compositing import ChannelRecipe, Window
from worker.grouping import Rules
from worker.grouping.series_info import SeriesInfo
from worker.results.algorithm import AlgorithmInfo
from worker.results.sc import CapturedLesion, build_sc
from worker.results.sr import LesionResult, build_sr
from worker.study_composites import LesionComposite, StudyComposites, composites_for_study

log = logging.getLogger(__name__)


@dataclass
class StudyAnalysis:
    study_uid: str
    task: str | None
    outcome: str  # "analysed" | "skipped"
    reason: str | None = None
    roles: dict[str, Any] = field(default_factory=dict)
    lesions: list[dict[str, Any]] = field(default_factory=list)
    sr: Dataset | None = None
    scs: list[Dataset] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "task": self.task, "outcome": self.outcome, "reason": self.reason,
                "roles": self.roles, "lesions": self.lesions,
                "sr": None if self.sr is None else str(self.sr.SOPInstanceUID),
                "sc": [str(sc.SOPInstanceUID) for sc in self.scs]}


def recipe_from_manifest(manifest: dict[str, Any]) -> ChannelRecipe:
    """The channel recipe a model was trained with (roles, windows, crop margins)."""
    source = manifest["input"]
    stored = (source.get("windowing") or {}).get("recipe") or {}
    windows = {role: Window(centre=w.get("centre", 60.0), width=w.get("width", 400.0),
                            percentiles=tuple(w["percentiles"]) if w.get("percentiles") else None)
               for role, w in (stored.get("windows") or {}).items()}
    return ChannelRecipe(channels=tuple(source["channel_recipe"]), windows=windows,  # type: ignore[arg-type]
                         margin=float(stored.get("margin", 0.5)), min_crop_mm=float(stored.get("min_crop_mm", 30.0)))


def _header(series: SeriesInfo, sop_uid: str) -> Dataset:
    image = next(i for i in series.images if i.sop_instance_uid == sop_uid)
    return dcmread(image.path, stop_before_pixels=True)


def _region_on_reference(item: LesionComposite, study: StudyComposites) -> tuple[Dataset, np.ndarray]:
    """The crop rectangle as a closed (column, row) polyline on the reference slice's image."""
    reference = study.grouping.roles[study.reference_role]
    assert reference is not None
    images = sorted((i for i in reference.series.images if i.position is not None),
                    key=lambda i: float(np.dot(np.cross(np.asarray(i.orientation[:3]), np.asarray(i.orientation[3:])),
                                               np.asarray(i.position))))
    image = images[min(item.slice_index, len(images) - 1)]
    (r0, r1), (c0, c1) = item.crop
    polyline = np.array([[c0, r0], [c1, r0], [c1, r1], [c0, r1], [c0, r0]], dtype=float)
    return dcmread(image.path, stop_before_pixels=True), polyline


def _lesion_box_in_composite(item: LesionComposite, study: StudyComposites, size: int) -> tuple[float, ...] | None:
    """Where the annotated lesion lies inside the composite, in composite pixels."""
    if item.lesion.source.value.startswith("fallback"):
        return None
    reference = study.grouping.roles[study.reference_role]
    assert reference is not None
    (r0, r1), (c0, c1) = item.crop
    corners = np.array([item.lesion.box_min_mm, item.lesion.box_max_mm])
    images = [i for i in reference.series.images if i.pixel_spacing and i.orientation and i.position]
    if not images:
        return None
    first = images[0]
    origin, orientation = np.asarray(first.position), np.asarray(first.orientation)
    spacing = first.pixel_spacing
    cols = (corners - origin) @ orientation[:3] / spacing[1]
    rows = (corners - origin) @ orientation[3:] / spacing[0]
    scale_r, scale_c = size / max(r1 - r0, 1), size / max(c1 - c0, 1)
    return ((rows.min() - r0) * scale_r, (cols.min() - c0) * scale_c,
            (rows.max() - r0) * scale_r, (cols.max() - c0) * scale_c)


def analyse_study(study_uid: str, series: list[SeriesInfo], rules: Rules, *, classifier: Any,
                  algorithm: AlgorithmInfo, device_uid: str, tta: bool = False) -> StudyAnalysis:
    manifest = classifier.artifact.manifest
    recipe = recipe_from_manifest(manifest)
    size = int(manifest["input"]["preprocessing"]["input_size"])
    study = composites_for_study(study_uid, series, rules, recipe=recipe, size=size)
    grouping = study.grouping
    roles = {role: None if m is None else {"series": m.series.series_uid, "acquisition_number":
                                           m.series.acquisition_number, "description": m.series.description}
             for role, m in grouping.roles.items()}
    if grouping.task is not None and grouping.task != manifest["task"]:
        return StudyAnalysis(study_uid, grouping.task, "skipped",
                             f"the model is for {manifest['task']}, the study is {grouping.task}", roles)
    if study.skipped or not study.composites:
        return StudyAnalysis(study_uid, grouping.task, "skipped", study.skipped or "no lesion", roles)

    predictions = classifier.predict([c.composite.rgb for c in study.composites], tta=tta, explain=True)
    lesion_results: list[LesionResult] = []
    evidence: dict[str, Dataset] = {}
    analysis = StudyAnalysis(study_uid, grouping.task, "analysed", None, roles)
    for number, (item, prediction) in enumerate(zip(study.composites, predictions, strict=True), start=1):
        for role, sop_uid in item.source_images.items():
            match = grouping.roles[role]
            if sop_uid and match is not None and sop_uid not in evidence:
                evidence[sop_uid] = _header(match.series, sop_uid)
        region_image, polyline = _region_on_reference(item, study)
        evidence.setdefault(str(region_image.SOPInstanceUID), region_image)
        roles_used = ", ".join(
            f"{channel}={role} (series {grouping.roles[role].series.series_uid}"  # type: ignore[union-attr]
            + (f" acquisition {grouping.roles[role].series.acquisition_number})"  # type: ignore[union-attr]
               if grouping.roles[role].series.acquisition_number is not None else ")")  # type: ignore[union-attr]
            for channel, role in zip("RGB", recipe.channels, strict=True))
        lesion_results.append(LesionResult(item.lesion.lesion_id, prediction.label, prediction.probabilities,
                                           item.lesion.source.value, region_image, polyline, roles_used))
        captured = CapturedLesion(item.lesion.lesion_id, prediction.label, prediction.probabilities,
                                  item.lesion.source.value, item.composite.rgb, prediction.heatmap,
                                  _lesion_box_in_composite(item, study, size), recipe.channels)  # type: ignore[arg-type]
        analysis.scs.append(build_sc(study_uid, captured, region_image, algorithm=algorithm, instance_number=number))
        analysis.lesions.append({"lesion_id": item.lesion.lesion_id, "label": prediction.label,
                                 "top_class": prediction.top_class,
                                 "probabilities": {k: round(v, 6) for k, v in prediction.probabilities.items()},
                                 "roi_source": item.lesion.source.value, "slice_index": item.slice_index,
                                 "motion": {r: None if m is None else m.as_json() for r, m in item.motion.items()}})
    analysis.sr = build_sr(study_uid, lesion_results, list(evidence.values()), algorithm=algorithm,
                           device_uid=device_uid)
    return analysis
