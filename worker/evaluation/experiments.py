"""The papers' experiments on a user's own data, under patient-level cross-validation.

- Misregistration (Yamada 2019): one channel of every composite is deliberately moved (pixel
  shift, rotation, skew) by each degree; the model is trained and evaluated per setting, and each
  setting is compared with the registered baseline on the same lesions (paired bootstrap over
  patients of the accuracy and AUC differences).
- Architectures: several CNNs (and the CNN-features + SVM variant) side by side under the same
  outer folds.

Every setting's predictions are out-of-fold: for each outer patient-level fold a model is trained
(with its own inner cross-validation and calibration) on the other folds and predicts the held-out
patients, so every lesion is predicted by a model that never saw its patient.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib.figure import Figure

from models.architectures import default_registry
from models.artifact import save_trained
from models.evaluation.bootstrap import paired_difference
from models.evaluation.metrics import encode, fast_auc_ovr
from models.evaluation.summary import BootstrapSettings, summarise
from models.inference import Classifier
from models.splits import patient_folds
from models.tasks import known_task
from models.training import Mode, TrainingConfig, train_model
from models.transforms import as_unit_float, misregister, to_input_tensor
from worker.composite_folder import load_composite_folder, load_study_folder
from worker.evaluation.document import ExperimentResult, ExperimentRow, Summary, json_ready

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP = BootstrapSettings()

TRANSFORMS = ("shift", "rotate", "skew")


@dataclass(frozen=True)
class ExperimentData:
    images: list[np.ndarray]
    labels: np.ndarray
    patient_ids: np.ndarray
    classes: list[str]
    channel_recipe: list[str]


def load_data(folder: Path, *, size: int, task: str | None = None) -> ExperimentData:
    """Composites of a folder of studies with labels.csv (the inference path builds them), or of a
    prepared composite folder (composites.csv)."""
    loaded = load_composite_folder(folder) if (folder / "composites.csv").is_file() else \
        load_study_folder(folder, size=size)
    definition = known_task(task) if task else None
    classes = list(definition.classes) if definition else sorted(set(loaded.labels))
    return ExperimentData(list(loaded.images), np.asarray(loaded.labels, dtype=object),
                          np.asarray(loaded.patient_ids, dtype=object), classes,
                          list(loaded.provenance.get("channel_recipe", ["r", "g", "b"])))


def misregistered(image: np.ndarray, transform: str, degree: float, *, channel: int) -> np.ndarray:
    """The composite with ``channel`` moved by ``degree`` pixels (shift, along x) or degrees.

    Degree 0 is the registered composite itself: an identity warp would add rounding noise of
    about 1e-15, and the baseline must be reproduced exactly.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if degree == 0:
        return as_unit_float(np.asarray(image))
    if transform == "shift":
        return misregister(image, channel=channel, shift_px=(float(degree), 0.0))
    if transform == "rotate":
        return misregister(image, channel=channel, rotation_deg=float(degree))
    return misregister(image, channel=channel, skew_deg=float(degree))


def out_of_fold_probabilities(data: ExperimentData, images: Sequence[np.ndarray], *, config: TrainingConfig,
                              folds: int, weights_dir: Path) -> np.ndarray:
    """(n, classes) probabilities, each lesion's from the model trained without its patient."""
    registry = default_registry()
    out = np.zeros((len(images), len(data.classes)))
    with tempfile.TemporaryDirectory(prefix="triphase-experiment-") as scratch:
        for train, test in patient_folds(data.labels, data.patient_ids, folds=folds, seed=config.seed):
            trained = train_model([images[i] for i in train], data.labels[train].tolist(),
                                  data.patient_ids[train].tolist(), classes=data.classes, config=config,
                                  registry=registry, weights_dir=weights_dir)
            artifact = save_trained(trained, Path(scratch), task="experiment", channel_recipe=data.channel_recipe)
            classifier = Classifier(artifact, registry=registry, device=config.device)
            out[test] = classifier.probabilities_of(to_input_tensor([images[i] for i in test],
                                                                    classifier.preprocessing))
    return out


def _accuracy(data: ExperimentData, probabilities: np.ndarray) -> Callable[[np.ndarray], float]:
    truth = encode(data.labels, data.classes)
    hits = probabilities.argmax(axis=1) == truth
    return lambda rows: float(hits[rows].mean())


def _auc(data: ExperimentData, probabilities: np.ndarray) -> Callable[[np.ndarray], float]:
    truth = encode(data.labels, data.classes)

    def auc(rows: np.ndarray) -> float:
        per_class = fast_auc_ovr(truth[rows], probabilities[rows])
        if len(data.classes) == 2:
            return float(per_class[1])
        defined = per_class[~np.isnan(per_class)]
        return float(defined.mean()) if defined.size else float("nan")
    return auc


def _summary(data: ExperimentData, probabilities: np.ndarray, settings: BootstrapSettings) -> Summary:
    predicted = np.asarray(data.classes, dtype=object)[probabilities.argmax(axis=1)]
    return summarise(data.labels, predicted, data.patient_ids, labels=data.classes, y_score=probabilities,
                     settings=settings, curves=False)


TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "roc_auc")


def _row(fixed: ExperimentRow, summary: Summary) -> ExperimentRow:
    row = dict(fixed)
    for name in TABLE_METRICS:
        interval = summary["metrics"].get(name, {})
        row |= {name: interval.get("estimate"), f"{name}_low": interval.get("low"),
                f"{name}_high": interval.get("high")}
    return row


def misregistration_experiment(data: ExperimentData, *, degrees: Mapping[str, Sequence[float]], channel: int,
                               config: TrainingConfig, folds: int, weights_dir: Path,
                               settings: BootstrapSettings = DEFAULT_BOOTSTRAP) -> ExperimentResult:
    """One row per transform and degree, each compared with the registered baseline."""
    baseline_images = [misregistered(image, "shift", 0, channel=channel) for image in data.images]
    baseline = out_of_fold_probabilities(data, baseline_images, config=config, folds=folds, weights_dir=weights_dir)
    baseline_summary = _summary(data, baseline, settings)
    rows: list[ExperimentRow] = []
    probabilities: dict[str, np.ndarray] = {}
    for transform, values in degrees.items():
        for degree in values:
            log.info("misregistration: %s %s", transform, degree)
            images = [misregistered(image, transform, degree, channel=channel) for image in data.images]
            probs = out_of_fold_probabilities(data, images, config=config, folds=folds, weights_dir=weights_dir)
            probabilities[f"{transform}:{degree}"] = probs
            row = _row({"transform": transform, "degree": float(degree), "channel": channel},
                       _summary(data, probs, settings))
            for name, metric in (("accuracy", _accuracy), ("roc_auc", _auc)):
                test = paired_difference(metric(data, probs), metric(data, baseline), data.patient_ids,
                                         n_resamples=settings.n_resamples, confidence=settings.confidence,
                                         seed=settings.seed)
                row |= {f"{name}_vs_registered": test.difference.estimate,
                        f"{name}_vs_registered_low": test.difference.low,
                        f"{name}_vs_registered_high": test.difference.high,
                        f"{name}_vs_registered_p": test.p_value}
            rows.append(row)
    result: ExperimentResult = json_ready({
        "experiment": "misregistration", "channel": channel, "folds": folds,
        "config": config.to_dict(), "bootstrap": settings.__dict__,
        "test": "paired percentile bootstrap over patients of the difference from the registered "
                "baseline (two-sided p)",
        "registered": _row({"transform": "none", "degree": 0.0, "channel": channel}, baseline_summary),
        "rows": rows, "lesions": len(data.labels),
        "patients": len(set(data.patient_ids.tolist())),
        "probabilities": {"registered": baseline, **probabilities}})
    return result


def architectures_experiment(data: ExperimentData, *, variants: Sequence[tuple[str, str]], config: TrainingConfig,
                             folds: int, weights_dir: Path,
                             settings: BootstrapSettings = DEFAULT_BOOTSTRAP) -> ExperimentResult:
    """One row per (architecture, mode), all under the same outer folds and seed."""
    images = [as_unit_float(np.asarray(image)) for image in data.images]
    rows: list[ExperimentRow] = []
    for architecture, mode in variants:
        log.info("architectures: %s (%s)", architecture, mode)
        # TrainingConfig checks the mode when it is made, so a cast is all the narrowing needed.
        variant = replace(config, architecture=architecture, mode=cast(Mode, mode))
        probs = out_of_fold_probabilities(data, images, config=variant, folds=folds, weights_dir=weights_dir)
        rows.append(_row({"architecture": architecture, "mode": mode}, _summary(data, probs, settings)))
    result: ExperimentResult = json_ready({
        "experiment": "architectures", "folds": folds, "config": config.to_dict(), "bootstrap": settings.__dict__,
        "rows": rows, "lesions": len(data.labels), "patients": len(set(data.patient_ids.tolist()))})
    return result


def _number(row: ExperimentRow, key: str) -> float:
    value = row[key]
    if not isinstance(value, (int, float)):
        raise TypeError(f"{key} is not a number: {value!r}")
    return float(value)


def _accuracy_bars(rows: Sequence[ExperimentRow]) -> tuple[list[float], list[list[float]]]:
    """Accuracy of each row and its error bars (below, above) for the 95% interval."""
    y = [_number(r, "accuracy") for r in rows]
    errors = [[_number(r, "accuracy") - _number(r, "accuracy_low") for r in rows],
              [_number(r, "accuracy_high") - _number(r, "accuracy") for r in rows]]
    return y, errors


def _plot(result: ExperimentResult, path: Path) -> None:
    """Accuracy with its interval per setting (drawn without pyplot: no global figure state)."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    rows = result["rows"]
    if result["experiment"] == "misregistration":
        for transform in dict.fromkeys(str(r["transform"]) for r in rows):
            mine = [r for r in rows if r["transform"] == transform]
            y, errors = _accuracy_bars(mine)
            axis.errorbar([_number(r, "degree") for r in mine], y, yerr=errors, marker="o", capsize=3,
                          label=transform)
        axis.set(xlabel="degree (pixels or degrees)", ylabel="accuracy (95% CI)", title="Misregistration")
        axis.legend()
    else:
        names = [f"{r['architecture']}\n{r['mode']}" for r in rows]
        y, errors = _accuracy_bars(rows)
        axis.bar(range(len(rows)), y, yerr=errors, capsize=3)
        axis.set_xticks(range(len(rows)), names, fontsize=7)
        axis.set(ylabel="accuracy (95% CI)", title="Architectures")
    figure.savefig(path, dpi=90, bbox_inches="tight")


def write_experiment(result: ExperimentResult, out_dir: Path) -> dict[str, Path]:
    """results.json (with out-of-fold probabilities), table.csv and plot.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "table.csv", "plot": out_dir / "plot.png"}
    paths["json"].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    rows = result["rows"]
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    _plot(result, paths["plot"])
    return paths
