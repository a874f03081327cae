"""The shapes of the evaluation's JSON documents: ``report.json`` and an experiment's ``results.json``.

These are the contracts between the code that computes the numbers and the renderings (HTML, CSV,
plots, the command's summary lines). A metric summary is what
:func:`models.evaluation.summary.summarise` returns; its inner shape belongs to that function.
After :func:`json_ready`, every non-finite number is ``None``, hence ``float | None`` below.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import numpy as np

from models.abstention import Coverage
from models.calibration import ClassReliability
from worker.evaluation.reader_comparison import ReaderComparison

Summary = dict[str, Any]
"""The metric summary of :func:`models.evaluation.summary.summarise` (estimates with intervals)."""


class StateCounts(TypedDict):
    studies: int
    reasons: dict[str, int]


# "class" is a keyword: the functional form.
MajorityBaseline = TypedDict("MajorityBaseline", {"class": str, "summary": Summary})


class ReaderGroup(TypedDict):
    readers: list[str]
    reads: int
    summary: Summary
    model_on_same_cases: Summary


class ReaderEntry(TypedDict):
    group: str
    summary: Summary


class ReadersSection(TypedDict):
    groups: dict[str, ReaderGroup]
    readers: dict[str, ReaderEntry]
    score_rule: str


class CalibrationSection(TypedDict):
    """Class-wise reliability of the evaluated probabilities (models/calibration.py)."""

    per_class: list[ClassReliability]
    lesions: int
    bins: int
    definition: str


class TrainingCheck(TypedDict):
    """The model's own training lesions among the evaluated ones: left out, or included on request."""

    training_check: str
    resubstitution: bool
    excluded_training_lesions: int
    training_lesions_included: int


class ModelSection(TypedDict):
    model: str
    task: str
    classes: list[str]
    left_out: dict[str, int]
    indeterminate: int
    summary: Summary | None
    training_check: NotRequired[str]
    resubstitution: NotRequired[bool]
    excluded_training_lesions: NotRequired[int]
    training_lesions_included: NotRequired[int]
    coverage: NotRequired[Coverage]
    calibration: NotRequired[CalibrationSection]
    majority_baseline: NotRequired[MajorityBaseline]
    readers: NotRequired[ReadersSection]
    reader_comparison: NotRequired[list[ReaderComparison]]


class Filters(TypedDict):
    model: str | None
    task: str | None
    since: str | None
    until: str | None
    readers: bool
    include_training: NotRequired[bool]


class Report(TypedDict):
    generated_at: str
    filters: Filters
    bootstrap: dict[str, object]
    label_metrics_note: str
    resubstitution: NotRequired[bool]
    excluded_training_lesions: NotRequired[int]
    reader_comparison: NotRequired[list[ReaderComparison]]
    skipped_studies: dict[str, StateCounts]
    models: list[ModelSection]


ExperimentRow = dict[str, "str | float | None"]
"""One table row, an arm: its name and setting (transform, degree; or architecture, mode), then each
metric's mean over seeds, ``_low``, ``_high``, ``_ci_method`` ("bca" or "percentile") and ``_seed_sd``,
and, except for the reference, the paired comparison with the reference (``_difference``,
``_difference_low``/``_high``, ``_difference_ci_method``, ``_p``, ``_p_holm``)."""


class ExperimentResult(TypedDict):
    experiment: str  # "misregistration" or "architectures"
    folds: int
    seeds: list[int]
    config: dict[str, object]
    bootstrap: dict[str, object]
    reference: str
    test: str
    rows: list[ExperimentRow]
    lesions: int
    patients: int
    channel: NotRequired[int]
    moved_role: NotRequired[str]
    units: NotRequired[dict[str, str]]
    probabilities: NotRequired[dict[str, list[list[list[float]]]]]


def json_ready(value: object) -> Any:
    """NaN and infinities as null, numpy scalars as Python numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
