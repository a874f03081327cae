"""The whole method on one study, without servers: composites -> prediction -> SR + SC files.

``triphase analyze`` and the Celery task both call :func:`analyse_study`; what the task adds is
only where the files come from and where the results go. A study that cannot be analysed (missing
or ambiguous phases, no usable geometry) is a typed skip with the reason, not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from db.records import LesionPrediction
from db.vocabulary import AnalysisOutcome
from models.compositing import ChannelRecipe, Window
from models.inference import Classifier, Prediction
from worker.grouping import Grouping, Rules
from worker.grouping.frames import frame_pixels
from worker.grouping.series_info import ImageInfo, SeriesInfo
from worker.results.algorithm import AlgorithmInfo
from worker.results.key_image import CapturedLesion, ReferenceView, reading_window
from worker.results.outline import ImagePlane, lesion_outline
from worker.results.references import SourceImage
from worker.results.sc import build_sc
from worker.results.sr import LesionResult, build_sr
from worker.study_composites import LesionComposite, StudyComposites, composites_for_study

log = logging.getLogger(__name__)


class RoleFound(TypedDict):
    """Which series (or acquisition of a series) filled a role: what the audit and ``--json`` show."""

    series: str
    acquisition_number: int | None
    description: str


@dataclass(frozen=True)
class AnalysisResult:
    """What analysing one study came to: a typed skip with its reason, or predictions, SR and SCs.

    ``scs`` and ``lesions`` run in the same order, one Secondary Capture per lesion.
    """

    study_uid: str
    task: str | None
    outcome: AnalysisOutcome
    reason: str | None = None
    roles: Mapping[str, RoleFound | None] = field(default_factory=dict)
    lesions: tuple[LesionPrediction, ...] = ()
    sr: Dataset | None = None
    scs: tuple[Dataset, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"study_uid": self.study_uid, "task": self.task, "outcome": self.outcome, "reason": self.reason,
                "roles": dict(self.roles), "lesions": [lesion.as_json() for lesion in self.lesions],
                "sr": None if self.sr is None else str(self.sr.SOPInstanceUID),
                "sc": [str(sc.SOPInstanceUID) for sc in self.scs]}


def recipe_from_manifest(manifest: Mapping[str, Any]) -> ChannelRecipe:
    """The channel recipe a model was trained with (roles, windows, crop margins)."""
    source = manifest["input"]
    stored = (source.get("windowing") or {}).get("recipe") or {}
    windows = {role: Window(centre=w.get("centre", 60.0), width=w.get("width", 400.0),
                            percentiles=tuple(w["percentiles"]) if w.get("percentiles") else None)
               for role, w in (stored.get("windows") or {}).items()}
    red, green, blue = source["channel_recipe"]
    return ChannelRecipe(channels=(red, green, blue), windows=windows,
                         margin=float(stored.get("margin", 0.5)), min_crop_mm=float(stored.get("min_crop_mm", 30.0)))


def _matched_series(grouping: Grouping, role: str) -> SeriesInfo:
    """The series that filled ``role``; composites exist only when every channel's role was found."""
    match = grouping.roles.get(role)
    if match is None:
        raise ValueError(f"role {role} has no series, yet a composite uses it")
    return match.series


def _header(series: SeriesInfo, sop_uid: str) -> Dataset:
    image = next(i for i in series.images if i.sop_instance_uid == sop_uid)
    return dcmread(image.path, stop_before_pixels=True)


def _depth(image: ImageInfo) -> float | None:
    """Where the image lies along its slice normal; None for an image without geometry."""
    if image.orientation is None or image.position is None:
        return None
    normal = np.cross(np.asarray(image.orientation[:3]), np.asarray(image.orientation[3:]))
    return float(np.dot(normal, np.asarray(image.position)))


def _reference_image(item: LesionComposite, study: StudyComposites) -> ImageInfo:
    """The reference role's image at the composite's slice: the one the SC shows and the SR's region is on.

    Named by SOP Instance UID and, in a multi-frame instance, frame number: every frame of an
    Enhanced or Legacy Converted series shares one UID, so the UID alone would pick the first.
    """
    reference = _matched_series(study.grouping, study.reference_role)
    wanted = (item.reference_image, item.reference_frame)
    chosen = next((i for i in reference.images if i.reference == wanted), None)
    if chosen is not None:
        return chosen
    placed = [(depth, image) for image in reference.images if (depth := _depth(image)) is not None]
    images = [image for _, image in sorted(placed, key=lambda pair: pair[0])]
    return images[min(item.slice_index, len(images) - 1)]


def _reference_view(item: LesionComposite, study: StudyComposites) -> tuple[ReferenceView, SourceImage]:
    """The reference slice in modality values with the lesion's outline on it, and the image it is.

    Of a multi-frame instance only the header and that frame's pixels are read; geometry comes
    from the frame's functional groups, so the outline lands on the frame the SR and SC name.
    """
    chosen = _reference_image(item, study)
    header = dcmread(chosen.path, stop_before_pixels=True)
    frame = chosen.frame_number
    pixels = frame_pixels(header, frame, source=chosen.path)
    plane = ImagePlane.of(header, frame)
    modality = _matched_series(study.grouping, study.reference_role).modality
    number = header.get("InstanceNumber")
    caption = "" if number is None else f"image {number}" + ("" if frame is None else f" frame {frame}")
    view = ReferenceView(pixels=pixels, window=reading_window(modality), role=study.reference_role,
                         pixel_spacing=plane.spacing, outline=lesion_outline(item.lesion, header, frame),
                         crop=item.crop,
                         orientation=tuple(float(v) for v in (*plane.row_direction, *plane.column_direction)),
                         caption=caption)
    return view, SourceImage(header, frame)


def _roles_used(grouping: Grouping, channels: tuple[str, str, str]) -> str:
    """Which series fed each colour channel, as the SR states it."""
    parts = []
    for channel, role in zip("RGB", channels, strict=True):
        series = _matched_series(grouping, role)
        acquisition = "" if series.acquisition_number is None else f" acquisition {series.acquisition_number}"
        parts.append(f"{channel}={role} (series {series.series_uid}{acquisition})")
    return ", ".join(parts)


def _roles_found(grouping: Grouping) -> dict[str, RoleFound | None]:
    return {role: None if m is None else RoleFound(series=m.series.series_uid,
                                                   acquisition_number=m.series.acquisition_number,
                                                   description=m.series.description)
            for role, m in grouping.roles.items()}


def _lesion_prediction(item: LesionComposite, prediction: Prediction) -> LesionPrediction:
    return LesionPrediction(lesion_id=item.lesion.lesion_id, label=prediction.label,
                            top_class=prediction.top_class,
                            probabilities={k: round(v, 6) for k, v in prediction.probabilities.items()},
                            roi_source=item.lesion.source.value, slice_index=item.slice_index,
                            motion={r: None if m is None else m.as_json() for r, m in item.motion.items()})


def _skip_reason(study: StudyComposites, model_task: str) -> str | None:
    """Why the study yields no prediction with this model, or None when it does."""
    task = study.grouping.task
    if task is not None and task != model_task:
        return f"the model is for {model_task}, the study is {task}"
    if study.skipped or not study.composites:
        return study.skipped or "no lesion"
    return None


def analyse_study(study_uid: str, series: list[SeriesInfo], rules: Rules, *, classifier: Classifier,
                  algorithm: AlgorithmInfo, device_uid: str, tta: bool = False,
                  grouping: Grouping | None = None) -> AnalysisResult:
    """Composites, predictions, SR and SCs of one study (``grouping``: the study's, if already made)."""
    manifest = classifier.artifact.manifest
    recipe = recipe_from_manifest(manifest)
    size = int(manifest["input"]["preprocessing"]["input_size"])
    study = composites_for_study(study_uid, series, rules, recipe=recipe, size=size, grouping=grouping)
    grouping = study.grouping
    roles = _roles_found(grouping)
    reason = _skip_reason(study, manifest["task"])
    if reason is not None:
        return AnalysisResult(study_uid, grouping.task, AnalysisOutcome.SKIPPED, reason, roles)

    predictions = classifier.predict([c.composite.rgb for c in study.composites], tta=tta, explain=True)
    lesion_results: list[LesionResult] = []
    evidence: dict[str, Dataset] = {}
    scs: list[Dataset] = []
    for number, (item, prediction) in enumerate(zip(study.composites, predictions, strict=True), start=1):
        channel_sources = []
        for role, sop_uid in item.source_images.items():
            if sop_uid and grouping.roles.get(role) is not None:
                if sop_uid not in evidence:
                    evidence[sop_uid] = _header(_matched_series(grouping, role), sop_uid)
                channel_sources.append(SourceImage(evidence[sop_uid], item.source_frames.get(role)))
        view, region_image = _reference_view(item, study)
        evidence.setdefault(region_image.uid, region_image.header)
        lesion_results.append(LesionResult(item.lesion.lesion_id, prediction.label, prediction.probabilities,
                                           item.lesion.source.value, region_image, view.outline.polyline,
                                           _roles_used(grouping, recipe.channels)))
        captured = CapturedLesion(item.lesion.lesion_id, prediction.label, prediction.probabilities,
                                  item.lesion.source.value, item.composite.rgb, prediction.heatmap,
                                  recipe.channels, view)
        scs.append(build_sc(study_uid, captured, region_image, algorithm=algorithm, instance_number=number,
                            channel_sources=channel_sources))
    sr = build_sr(study_uid, lesion_results, list(evidence.values()), algorithm=algorithm, device_uid=device_uid)
    return AnalysisResult(study_uid, grouping.task, AnalysisOutcome.ANALYSED, None, roles,
                          tuple(_lesion_prediction(item, p) for item, p in zip(study.composites, predictions,
                                                                                strict=True)),
                          sr, tuple(scs))
