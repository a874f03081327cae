"""Model cards: what each installed model artifact's manifest says, in the shape a person reads.

Manifests are JSON from disk, possibly from an older writer, so every field is looked up
defensively: a card with a blank where an old manifest lacks a field is better than a console that
fails to show the models at all. Only the manifest is read (never the weights), so the console needs
neither torch nor the time to verify hashes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.artifact import Artifact, list_artifacts
from worker.web.drift import Wilson, wilson

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def _at(data: object, *keys: str) -> object:
    """``data[k1][k2]...``, or None where any level is missing or not a table."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: object) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class MetricRow:
    """One cross-validation metric: pooled out of fold, mean of folds, fold range, majority baseline."""

    name: str
    out_of_fold: float | None
    mean: float | None
    fold_low: float | None
    fold_high: float | None
    baseline: float | None


@dataclass(frozen=True)
class ModelCard:
    hash: str
    task: str
    classes: list[str]
    architecture: str
    mode: str
    created_at: str
    weights_origin: str
    random_init: bool
    warnings: list[str]
    lesions: int
    patients: int
    lesions_per_class: dict[str, int]
    folds: int
    split: str
    metrics: list[MetricRow]
    accuracy_ci: Wilson | None
    calibration: dict[str, str]
    abstention_threshold: float | None
    configured_for: list[str] = field(default_factory=list)

    @property
    def short_hash(self) -> str:
        return self.hash[:12]


def _metric_rows(cv: object) -> list[MetricRow]:
    folds = _at(cv, "per_fold")
    per_fold = list(folds) if isinstance(folds, list) else []
    rows = []
    for name in METRICS:
        values = [v for v in (_number(_at(fold, "metrics", name)) for fold in per_fold) if v is not None]
        rows.append(MetricRow(name.replace("_", " "), _number(_at(cv, "out_of_fold", name)),
                              _number(_at(cv, "mean", name)), min(values, default=None), max(values, default=None),
                              _number(_at(cv, "majority_baseline_mean", name))))
    return rows


def _weights_origin(manifest: Mapping[str, object]) -> str:
    kind = _text(_at(manifest, "weights_origin", "kind")) or "unknown"
    name = _text(_at(manifest, "weights_origin", "file_name"))
    digest = _text(_at(manifest, "weights_origin", "sha256"))
    return " ".join(part for part in (kind, name, f"sha256 {digest[:12]}" if digest else "") if part)


def _calibration(manifest: Mapping[str, object]) -> dict[str, str]:
    calibration = _at(manifest, "calibration")
    if not isinstance(calibration, Mapping):
        return {}
    return {str(key).replace("_", " "): f"{value:.4f}" if isinstance(value, float) else str(value)
            for key, value in calibration.items() if isinstance(value, (str, int, float))}  # tables elsewhere


def _serves(artifact: Artifact, reference: str) -> bool:
    """Whether a ``[worker.models]`` reference (hash prefix or artifact folder) names ``artifact``."""
    if not reference:
        return False
    return artifact.hash.startswith(reference.lower()) or Path(reference).expanduser().name == artifact.hash


def card(artifact: Artifact, configured: Mapping[str, str]) -> ModelCard:
    """The card of one artifact; ``configured`` (task -> reference) says which tasks it serves."""
    manifest = artifact.manifest
    lesions = _count(_at(manifest, "training", "data", "lesions"))
    per_class = _at(manifest, "training", "data", "lesions_per_class")
    oof_accuracy = _number(_at(manifest, "cv", "out_of_fold", "accuracy"))
    classes = _at(manifest, "classes")
    warnings = _at(manifest, "warnings")
    return ModelCard(
        hash=artifact.hash, task=_text(_at(manifest, "task")),
        classes=[str(c) for c in classes] if isinstance(classes, list) else [],
        architecture=_text(_at(manifest, "architecture")), mode=_text(_at(manifest, "mode")),
        created_at=_text(_at(manifest, "created_at")), weights_origin=_weights_origin(manifest),
        random_init=_at(manifest, "random_init") is True,
        warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        lesions=lesions, patients=_count(_at(manifest, "training", "data", "patients")),
        lesions_per_class={str(k): _count(v) for k, v in per_class.items()} if isinstance(per_class, Mapping) else {},
        folds=_count(_at(manifest, "cv", "folds")), split=_text(_at(manifest, "cv", "split")),
        metrics=_metric_rows(_at(manifest, "cv")),
        accuracy_ci=wilson(round(oof_accuracy * lesions), lesions) if oof_accuracy is not None and lesions else None,
        calibration=_calibration(manifest), abstention_threshold=_number(_at(manifest, "abstention_threshold")),
        configured_for=sorted(task for task, ref in configured.items() if _serves(artifact, ref)),
    )


def model_cards(models_dir: Path, configured: Mapping[str, str]) -> list[ModelCard]:
    """Cards of every artifact in ``models_dir``, the ones configured for a task first."""
    cards = [card(artifact, configured) for artifact in list_artifacts(models_dir)]
    return sorted(cards, key=lambda c: not c.configured_for)
