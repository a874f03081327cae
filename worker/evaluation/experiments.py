"""The papers' experiments on a user's own data, under patient-level cross-validation.

- Misregistration (Yamada 2019): the paper's real question is what registration buys, so the arms
  are the registered composites (the reference), the unregistered ones (``register=False``: the
  phases only resampled onto the reference grid), and deliberate misregistration of one channel's
  phase: a shift in millimetres on the patient grid before cropping (so "4 mm" means 4 mm whatever
  the lesion size or the input size), and rotations and skews of the composite's channel in degrees.
- Architectures: several CNNs (and the CNN-features + SVM variant), each compared with a reference
  architecture.

Every arm is trained with the recipe of ``triphase train`` (or the one given) and repeated over
seeds: each seed draws its own outer patient-level folds and training seed, and every arm uses the
same folds for a seed, so arms stay paired. Each lesion's probabilities come from a model that
never saw its patient. A metric is the mean over seeds; its interval is the patient-level
bootstrap of that mean and its seed SD is reported beside it, so the interval no longer ignores
training variance entirely. Each arm is compared with the reference by a patient-level paired
bootstrap of the difference (accuracy and AUC), Holm-adjusted across arms per metric.
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
from statsmodels.stats.multitest import multipletests

from models.architectures import default_registry
from models.artifact import save_trained
from models.evaluation.bootstrap import Interval, bootstrap, paired_difference
from models.evaluation.metrics import encode, fast_auc_ovr, fast_hand_till, metrics_from_codes
from models.evaluation.summary import BootstrapSettings
from models.inference import Classifier
from models.splits import patient_folds
from models.tasks import known_task
from models.training import Mode, TrainingConfig, train_model
from models.transforms import as_unit_float, misregister, to_input_tensor
from worker.composite_folder import load_composite_folder, load_study_folder
from worker.evaluation.document import ExperimentResult, ExperimentRow, json_ready
from worker.evaluation.render import plot_experiment, render_experiment_html
from worker.study_composites import Displacement

log = logging.getLogger(__name__)
DEFAULT_BOOTSTRAP = BootstrapSettings()

TRANSFORMS = ("shift", "rotate", "skew")
TABLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "roc_auc", "hand_till")
COMPARED = ("accuracy", "roc_auc")

Rebuild = Callable[[bool, Displacement | None], list[np.ndarray]]
"""Composites again from the DICOM studies: (register, displacement) -> images in the same order."""


@dataclass(frozen=True)
class ExperimentData:
    images: list[np.ndarray]
    labels: np.ndarray
    patient_ids: np.ndarray
    classes: list[str]
    channel_recipe: list[str]
    rebuild: Rebuild | None = None  # None for prepared composites: no volume to move or leave unregistered


def load_data(folder: Path, *, size: int, task: str | None = None) -> ExperimentData:
    """Composites of a folder of studies with labels.csv (the inference path builds them), or of a
    prepared composite folder (composites.csv)."""
    from_studies = not (folder / "composites.csv").is_file()
    loaded = load_study_folder(folder, size=size) if from_studies else load_composite_folder(folder)
    definition = known_task(task) if task else None
    classes = list(definition.classes) if definition else sorted(set(loaded.labels))

    def rebuild(register: bool, displace: Displacement | None) -> list[np.ndarray]:
        again = load_study_folder(folder, size=size, register=register, displace=displace)
        if again.labels != loaded.labels or again.patient_ids != loaded.patient_ids:
            raise ValueError("rebuilding the composites gave other lesions; the arms would not be paired")
        return list(again.images)

    return ExperimentData(list(loaded.images), np.asarray(loaded.labels, dtype=object),
                          np.asarray(loaded.patient_ids, dtype=object), classes,
                          list(loaded.provenance.get("channel_recipe", ["r", "g", "b"])),
                          rebuild if from_studies else None)


def misregistered(image: np.ndarray, transform: str, degree: float, *, channel: int) -> np.ndarray:
    """The composite with ``channel`` rotated or skewed by ``degree`` degrees (or shifted by pixels,
    kept for prepared composites, which have no patient grid).

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
    """(n, classes) probabilities, each lesion's from the model trained without its patient (outer
    folds drawn with ``config.seed``)."""
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


def over_seeds(data: ExperimentData, images: Sequence[np.ndarray], *, config: TrainingConfig, folds: int,
               seeds: Sequence[int], weights_dir: Path) -> np.ndarray:
    """(seeds, n, classes): the out-of-fold probabilities of each seed (folds and training)."""
    return np.stack([out_of_fold_probabilities(data, images, config=replace(config, seed=seed), folds=folds,
                                               weights_dir=weights_dir) for seed in seeds])


def _metrics(truth: np.ndarray, probabilities: np.ndarray, n_classes: int) -> dict[str, float]:
    """The table's metrics of one seed's predictions (numpy fast paths, checked against scikit-learn)."""
    codes = metrics_from_codes(truth, probabilities.argmax(axis=1), n_classes)
    auc = fast_auc_ovr(truth, probabilities)
    defined = auc[~np.isnan(auc)]
    macro = float(auc[1]) if n_classes == 2 else (float(defined.mean()) if defined.size else float("nan"))
    return {"accuracy": codes["accuracy"], "balanced_accuracy": codes["balanced_accuracy"],
            "macro_f1": codes["macro_f1"], "cohen_kappa": codes["cohen_kappa"], "roc_auc": macro,
            "hand_till": fast_hand_till(truth, probabilities)}


def _seed_mean(truth: np.ndarray, probabilities: np.ndarray, n_classes: int
               ) -> Callable[[np.ndarray], dict[str, float]]:
    def statistic(rows: np.ndarray) -> dict[str, float]:
        per_seed = [_metrics(truth[rows], p[rows], n_classes) for p in probabilities]
        return {name: float(np.mean([m[name] for m in per_seed])) for name in TABLE_METRICS}
    return statistic


def _row(fixed: ExperimentRow, data: ExperimentData, probabilities: np.ndarray,
         settings: BootstrapSettings) -> ExperimentRow:
    truth = encode(data.labels, data.classes)
    intervals = bootstrap(_seed_mean(truth, probabilities, len(data.classes)), data.patient_ids,
                          n_resamples=settings.n_resamples, confidence=settings.confidence, seed=settings.seed)
    per_seed = [_metrics(truth, p, len(data.classes)) for p in probabilities]
    row = dict(fixed)
    for name in TABLE_METRICS:
        interval = intervals[name]
        assert isinstance(interval, Interval)
        spread = float(np.std([m[name] for m in per_seed], ddof=1)) if len(per_seed) > 1 else float("nan")
        row |= {name: interval.estimate, f"{name}_low": interval.low, f"{name}_high": interval.high,
                f"{name}_ci_method": interval.method, f"{name}_seed_sd": spread}
    return row


def _compare(rows: list[ExperimentRow], arms: list[np.ndarray], reference: int, data: ExperimentData,
             settings: BootstrapSettings) -> None:
    """Paired patient bootstrap of each arm minus the reference, Holm-adjusted per metric."""
    truth = encode(data.labels, data.classes)
    for name in COMPARED:
        def metric(probabilities: np.ndarray, name: str = name) -> Callable[[np.ndarray], float]:
            statistic = _seed_mean(truth, probabilities, len(data.classes))
            return lambda r: statistic(r)[name]
        tested = []
        for k, probabilities in enumerate(arms):
            if k == reference:
                continue
            test = paired_difference(metric(probabilities), metric(arms[reference]), data.patient_ids,
                                     n_resamples=settings.n_resamples, confidence=settings.confidence,
                                     seed=settings.seed)
            rows[k] |= {f"{name}_difference": test.difference.estimate, f"{name}_difference_low": test.difference.low,
                        f"{name}_difference_high": test.difference.high,
                        f"{name}_difference_ci_method": test.difference.method, f"{name}_p": test.p_value}
            tested.append(k)
        finite = [k for k in tested if np.isfinite(cast(float, rows[k][f"{name}_p"]))]
        if finite:
            adjusted = multipletests([cast(float, rows[k][f"{name}_p"]) for k in finite], method="holm")[1]
            for k, value in zip(finite, adjusted, strict=True):
                rows[k][f"{name}_p_holm"] = float(value)


@dataclass(frozen=True)
class Design:
    """How every arm is trained: the recipe, the outer folds, the seeds, the bootstrap."""

    config: TrainingConfig
    folds: int
    seeds: tuple[int, ...]
    weights_dir: Path
    settings: BootstrapSettings = DEFAULT_BOOTSTRAP

    def as_json(self) -> dict[str, object]:
        return {"folds": self.folds, "seeds": list(self.seeds), "config": self.config.to_dict(),
                "bootstrap": self.settings.__dict__}


def _arm_images(data: ExperimentData, transform: str, degree: float, channel: int) -> list[np.ndarray]:
    if transform == "shift" and data.rebuild is not None:
        role = data.channel_recipe[channel]
        return data.rebuild(True, {role: (0.0, 0.0, float(degree))})
    return [misregistered(image, transform, degree, channel=channel) for image in data.images]


def misregistration_experiment(data: ExperimentData, *, degrees: Mapping[str, Sequence[float]], channel: int,
                               design: Design, unregistered: bool = True) -> ExperimentResult:
    """Registered (reference), unregistered, and each transform and degree, all on the same folds."""
    registered = [as_unit_float(np.asarray(image)) for image in data.images]

    def train(images: Sequence[np.ndarray]) -> np.ndarray:
        return over_seeds(data, images, config=design.config, folds=design.folds, seeds=design.seeds,
                          weights_dir=design.weights_dir)

    arms: list[tuple[ExperimentRow, np.ndarray]] = [({"arm": "registered", "transform": "none", "degree": 0.0},
                                                     train(registered))]
    if unregistered and data.rebuild is not None:
        log.info("misregistration: unregistered")
        arms.append(({"arm": "unregistered", "transform": "none", "degree": 0.0}, train(data.rebuild(False, None))))
    for transform, values in degrees.items():
        for degree in values:
            log.info("misregistration: %s %s", transform, degree)
            probabilities = arms[0][1] if degree == 0 else train(_arm_images(data, transform, degree, channel))
            arms.append(({"arm": f"{transform}:{degree:g}", "transform": transform, "degree": float(degree)},
                         probabilities))
    shift_unit = "mm on the patient grid" if data.rebuild is not None else "pixels of prepared composites"
    return _result("misregistration", data, design, arms, extra={
        "channel": channel, "moved_role": data.channel_recipe[channel],
        "units": {"shift": shift_unit, "rotate": "degrees", "skew": "degrees"}})


def architectures_experiment(data: ExperimentData, *, variants: Sequence[tuple[str, str]], design: Design,
                             reference: int = 0) -> ExperimentResult:
    """One arm per (architecture, mode) under the same folds and seeds; each against ``reference``."""
    images = [as_unit_float(np.asarray(image)) for image in data.images]
    arms: list[tuple[ExperimentRow, np.ndarray]] = []
    for architecture, mode in variants:
        log.info("architectures: %s (%s)", architecture, mode)
        # TrainingConfig checks the mode when it is made, so a cast is all the narrowing needed.
        variant = replace(design.config, architecture=architecture, mode=cast(Mode, mode))
        probabilities = over_seeds(data, images, config=variant, folds=design.folds, seeds=design.seeds,
                                   weights_dir=design.weights_dir)
        arms.append(({"arm": f"{architecture}:{mode}", "architecture": architecture, "mode": mode}, probabilities))
    return _result("architectures", data, design, arms, reference=reference)


def _result(kind: str, data: ExperimentData, design: Design, arms: list[tuple[ExperimentRow, np.ndarray]], *,
            reference: int = 0, extra: Mapping[str, object] | None = None) -> ExperimentResult:
    rows = [_row(fixed, data, probabilities, design.settings) for fixed, probabilities in arms]
    _compare(rows, [p for _, p in arms], reference, data, design.settings)
    result: ExperimentResult = json_ready({
        "experiment": kind, **design.as_json(), "reference": str(rows[reference]["arm"]),
        "test": "metrics are means over seeds with 95% patient-bootstrap intervals, BCa where defined, else "
                "percentile (each _ci_method says which); each arm minus the reference by a paired patient bootstrap "
                "(two-sided p inverting that interval), Holm-adjusted across arms per metric",
        "rows": rows, "lesions": len(data.labels), "patients": len(set(data.patient_ids.tolist())),
        **(extra or {}),
        "probabilities": {str(fixed["arm"]): p for fixed, p in arms}})
    return result


def write_experiment(result: ExperimentResult, out_dir: Path) -> dict[str, Path]:
    """results.json (with out-of-fold probabilities), table.csv, plot.png and report.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "csv": out_dir / "table.csv", "plot": out_dir / "plot.png",
             "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    rows = result["rows"]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if row.get(k) is None else row.get(k) for k in columns} for row in rows)
    plot_experiment(result).savefig(paths["plot"], dpi=90, bbox_inches="tight")
    paths["html"].write_text(render_experiment_html(result), encoding="utf-8")
    return paths
