"""Training entry point: arrays, labels and patient ids in; a trained, cross-validated model out.

``train_model`` knows nothing of files or DICOM: a folder of prepared composites and composites built
from studies (by the same code the inference path uses) feed it the same way. It runs patient-level
stratified k-fold cross-validation (the metrics a user quotes), then fits the deployed model by
exactly the recipe each fold used. In SVM mode the backbone is fixed: its features are computed
once, and each fold (and the final model) fits an SVM on them.

Calibration is cross-fitted, and each map belongs to the network it was fitted for: every network
(each fold's and the deployed one) is trained on its patients minus a patient-level held-out
split, early-stops on that split, and its prior-corrected calibration (models/calibration.py) is
fitted on that split's logits. The alternative, averaging the fold models each with its own map,
would keep all the data in the deployed prediction but ship k networks and change inference; the
price here is that the deployed network sees ~80% of the patients, which is exactly what the
cross-validation estimates measured. The out-of-fold probabilities are therefore nested (no test
fold touches a network, its epoch or its calibration), and the per-class reliability, the
calibrated log-loss and the abstention threshold for a target coverage all come from them.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

import numpy as np
import torch
from torch import nn

from models.abstention import Coverage, apply_abstention, coverage, cross_fitted_labels, threshold_for_coverage
from models.architectures import extract_features, head_module, load_pretrained, replace_head
from models.calibration import (
    CalibrationMap,
    ClassReliability,
    fit_calibration,
    log_loss,
    per_class_reliability,
    softmax,
)
from models.device import autocast, deterministic, memory_format, resolve_device
from models.evaluation.baseline import majority_baseline
from models.evaluation.metrics import LabelSummary, classification_summary
from models.network_training import FitSettings, ProgressCallback, class_weights, fit_network, predict_logits
from models.registry import ArchitectureSpec, Registry
from models.splits import patient_folds, validation_split
from models.svm import FittedSvm, fit_svm, svm_probabilities
from models.transforms import Augmentation, AugmentationJson, Preprocessing, to_input_tensor
from models.weights import RANDOM_INIT, WeightsOrigin

log = logging.getLogger(__name__)

Mode = Literal["finetune", "linear", "svm"]
MODES: tuple[str, ...] = ("finetune", "linear", "svm")


@dataclass(frozen=True)
class TrainingConfig:
    """What a training run does; recorded verbatim in the manifest."""

    architecture: str
    mode: Mode = "finetune"
    folds: int = 5
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float | None = None  # default: 1e-4 fine-tuning pretrained, 1e-3 otherwise
    weight_decay: float = 1e-4
    patience: int = 5
    validation_fraction: float = 0.2
    seed: int = 0
    input_size: int | None = None  # default: the architecture's
    augmentation: Augmentation = field(default_factory=Augmentation)
    class_weighting: bool = True
    random_init: bool = False
    device: str = "auto"
    mixed_precision: bool = True
    channels_last: bool = True
    svm_inner_folds: int = 3
    abstention_threshold: float = 0.0
    target_coverage: float | None = None  # if set, the threshold is chosen on out-of-fold probabilities

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("epochs and patience must be >= 1, batch_size >= 2")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if not 0.0 <= self.abstention_threshold < 1.0:
            raise ValueError(f"abstention_threshold must be in [0, 1), got {self.abstention_threshold}")
        if self.target_coverage is not None:
            if not 0.0 < self.target_coverage <= 1.0:
                raise ValueError(f"target_coverage must be in (0, 1], got {self.target_coverage}")
            if self.abstention_threshold:
                raise ValueError("give a target coverage or a fixed abstention threshold, not both")

    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if (self.mode == "finetune" and not self.random_init) else 1e-3

    def to_dict(self) -> TrainingConfigJson:
        return {"architecture": self.architecture, "mode": self.mode, "folds": self.folds, "epochs": self.epochs,
                "batch_size": self.batch_size, "learning_rate": self.effective_learning_rate(),
                "weight_decay": self.weight_decay, "patience": self.patience,
                "validation_fraction": self.validation_fraction, "seed": self.seed, "input_size": self.input_size,
                "augmentation": self.augmentation.to_dict(), "class_weighting": self.class_weighting,
                "random_init": self.random_init, "device": self.device, "mixed_precision": self.mixed_precision,
                "channels_last": self.channels_last, "svm_inner_folds": self.svm_inner_folds,
                "abstention_threshold": self.abstention_threshold, "target_coverage": self.target_coverage}


class TrainingConfigJson(TypedDict):
    """``training.config`` in the manifest: the :class:`TrainingConfig`, learning rate resolved."""

    architecture: str
    mode: str
    folds: int
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    validation_fraction: float
    seed: int
    input_size: int | None
    augmentation: AugmentationJson
    class_weighting: bool
    random_init: bool
    device: str
    mixed_precision: bool
    channels_last: bool
    svm_inner_folds: int
    abstention_threshold: float
    target_coverage: float | None


class DataSummary(TypedDict):
    """``training.data`` in the manifest: how much data of each class the model saw."""

    lesions: int
    patients: int
    lesions_per_class: dict[str, int]
    patients_per_class: dict[str, int]


class SvmChoice(TypedDict):
    """The hyperparameters patient-level inner cross-validation chose for one SVM."""

    params: dict[str, object]
    inner_cv_macro_f1: float


class NetworkFold(TypedDict):
    best_epoch: int
    epochs_run: int


class SvmFold(TypedDict):
    svm: SvmChoice


class FoldReport(TypedDict):
    """One cross-validation fold: how it was fitted (network or SVM keys) and what it scored."""

    fold: int
    best_epoch: NotRequired[int]
    epochs_run: NotRequired[int]
    svm: NotRequired[SvmChoice]
    lesions_test: int
    patients_test: int
    metrics: LabelSummary
    majority_baseline: LabelSummary


class CrossValidationReport(TypedDict):
    """The manifest's ``cv`` section: the figures a user quotes, beside the majority baseline."""

    folds: int
    split: str
    per_fold: list[FoldReport]
    mean: LabelSummary
    majority_baseline_mean: LabelSummary
    out_of_fold: LabelSummary
    coverage: Coverage
    abstention: str


class AbstentionReport(TypedDict):
    """The manifest's ``abstention`` section: how the deployed threshold was chosen."""

    threshold: float
    target_coverage: float | None
    rule: str
    out_of_fold_coverage: float


class CalibrationReport(TypedDict):
    """The manifest's ``calibration`` section: the deployed network's map (temperature 1.0 and no
    bias for the SVM, whose Platt scaling is inside it) and the nested out-of-fold figures."""

    method: str
    temperature: float
    bias: NotRequired[dict[str, float]]
    prior_correction: NotRequired[dict[str, float]]
    fitted_on: NotRequired[str]
    out_of_fold_log_loss_uncalibrated: NotRequired[float]
    out_of_fold_log_loss: float
    per_class: list[ClassReliability]


class FinalFit(TypedDict):
    """``training.final_fit``: epochs and rule of the deployed network, or the deployed SVM's choice."""

    epochs: NotRequired[int]
    rule: NotRequired[str]
    calibration_lesions: NotRequired[int]
    calibration_patients: NotRequired[int]
    svm: NotRequired[SvmChoice]


@dataclass(frozen=True)
class TrainingIds:
    """The training lesions' patient and study ids, in memory only: the manifest stores them
    salted and hashed (models/artifact.py), so evaluation can leave these patients out. The salt is
    drawn once per trained model, so saving the same model twice still gives the same artifact."""

    patients: list[str]
    studies: list[str]
    salt: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class TrainedModel:
    """The outcome of :func:`train_model`, ready to be written as an artifact."""

    spec: ArchitectureSpec
    config: TrainingConfig
    classes: list[str]
    preprocessing: Preprocessing
    state: dict[str, torch.Tensor]
    svm: FittedSvm | None
    weights_origin: WeightsOrigin
    temperature: float
    cv: CrossValidationReport
    calibration: CalibrationReport
    data_summary: DataSummary
    final_fit: FinalFit
    abstention: AbstentionReport
    training_ids: TrainingIds

    def save_weights(self, path: Path) -> None:
        """Write the network's state dict (``weights.pt`` of an artifact)."""
        torch.save(self.state, path)


def data_summary(labels: np.ndarray, patient_ids: np.ndarray, classes: Sequence[str]) -> DataSummary:
    counts = Counter(labels.tolist())
    patients_per_class = {c: len({p for p, y in zip(patient_ids, labels, strict=True) if y == c}) for c in classes}
    return {"lesions": int(len(labels)), "patients": int(len(set(patient_ids.tolist()))),
            "lesions_per_class": {c: int(counts.get(c, 0)) for c in classes},
            "patients_per_class": patients_per_class}


class _Starter:
    """Builds a fresh network for each fit from one verified copy of the starting weights."""

    def __init__(self, spec: ArchitectureSpec, num_classes: int, *, random_init: bool, weights_dir: Path) -> None:
        self.spec, self.num_classes = spec, num_classes
        self.imagenet_state: dict[str, torch.Tensor] | None = None
        if random_init:
            self.origin = WeightsOrigin(RANDOM_INIT, None, None)
            log.warning("%s: training from RANDOM INITIALISATION, not ImageNet weights", spec.name)
        else:
            model = spec.build(**spec.builder_options)
            self.origin = load_pretrained(model, spec, weights_dir)
            self.imagenet_state = model.state_dict()

    def new(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = self.spec.build(**self.spec.builder_options)
        if self.imagenet_state is not None:
            model.load_state_dict(self.imagenet_state)
        return replace_head(model, self.spec, self.num_classes)


@dataclass(frozen=True)
class _Run:
    """What both modes share: the checked data, normalised once on CPU, its folds and the device."""

    config: TrainingConfig
    spec: ArchitectureSpec
    classes: list[str]
    y_labels: np.ndarray
    y_index: np.ndarray
    groups: np.ndarray
    x_all: torch.Tensor
    folds: list[tuple[np.ndarray, np.ndarray]]
    device: torch.device
    starter: _Starter
    progress: ProgressCallback | None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Fitted:
    """One mode's outcome: nested out-of-fold probabilities and the deployed model."""

    probabilities: np.ndarray
    fold_fits: list[NetworkFold | SvmFold]
    state: dict[str, torch.Tensor]
    svm: FittedSvm | None
    calibration_map: CalibrationMap
    calibration: CalibrationReport
    final_fit: FinalFit


def _features(model: nn.Module, spec: ArchitectureSpec, inputs: torch.Tensor, device: torch.device,
              config: TrainingConfig) -> np.ndarray:
    model.to(device).to(memory_format=memory_format(device, config.channels_last)).eval()
    out = []
    with torch.inference_mode():
        for chunk in torch.split(inputs, config.batch_size):
            chunk = chunk.to(device).contiguous(memory_format=memory_format(device, config.channels_last))
            with autocast(device, config.mixed_precision):
                out.append(extract_features(model, spec, chunk).float().cpu())
    features: np.ndarray = torch.cat(out).numpy().astype(np.float64)
    return features


def _svm_choice(svm: FittedSvm) -> SvmChoice:
    return {"params": svm.best_params_, "inner_cv_macro_f1": svm.inner_cv_macro_f1_}


def _cross_validate_svm(run: _Run) -> _Fitted:
    """Features of the fixed backbone once, an SVM per fold (Platt-calibrated inside), then on all data."""
    config = run.config
    backbone = run.starter.new(config.seed)
    features = _features(backbone, run.spec, run.x_all, run.device, config)
    oof = np.zeros((len(run.y_index), run.num_classes))
    fold_fits: list[NetworkFold | SvmFold] = []
    for k, (train, test) in enumerate(run.folds, start=1):
        svm = fit_svm(features[train], run.y_index[train], run.groups[train], seed=config.seed + k,
                      inner_folds=config.svm_inner_folds)
        oof[test] = svm_probabilities(svm, features[test], run.num_classes)
        fold_fits.append({"svm": _svm_choice(svm)})
        if run.progress:
            run.progress("cross-validation (SVM)", k, len(run.folds))
    final_svm = fit_svm(features, run.y_index, run.groups, seed=config.seed, inner_folds=config.svm_inner_folds)
    calibration: CalibrationReport = {
        "method": "platt-sigmoid (CalibratedClassifierCV on patient-level inner folds)", "temperature": 1.0,
        "out_of_fold_log_loss": log_loss(run.y_index, np.clip(oof, 1e-12, 1)),
        "per_class": per_class_reliability(run.y_index, oof, run.classes)}
    return _Fitted(probabilities=oof, fold_fits=fold_fits,
                   state={k: v.detach().cpu() for k, v in backbone.state_dict().items()}, svm=final_svm,
                   calibration_map=CalibrationMap.identity(run.num_classes), calibration=calibration,
                   final_fit={"svm": _svm_choice(final_svm)})


def _fit_settings(config: TrainingConfig) -> FitSettings:
    return FitSettings(config.epochs, config.batch_size, config.effective_learning_rate(), config.weight_decay,
                       config.patience, config.augmentation, config.mixed_precision, config.channels_last)


@dataclass(frozen=True)
class _CalibratedNetwork:
    """A network fitted by the deployed recipe, its own calibration map and its held-out rows."""

    model: nn.Module
    calibration: CalibrationMap
    best_epoch: int
    epochs_run: int
    held_out_rows: np.ndarray


def _logits(run: _Run, model: nn.Module, rows: np.ndarray) -> np.ndarray:
    config = run.config
    return predict_logits(model, run.x_all[rows], run.device, batch_size=config.batch_size,
                          mixed_precision=config.mixed_precision, channels_last=config.channels_last)


def _fit_calibrated(run: _Run, rows: np.ndarray, *, seed: int, label: str) -> _CalibratedNetwork:
    """Fit on ``rows`` minus a patient-level held-out split; early-stop on that split and fit the
    prior-corrected calibration on its logits, with the class weights this fit used."""
    config = run.config
    fit_idx, held_idx = validation_split(run.y_labels[rows], run.groups[rows], fraction=config.validation_fraction,
                                         seed=seed)
    fit_rows, held_rows = rows[fit_idx], rows[held_idx]
    model = run.starter.new(seed)
    result = fit_network(model, head_module(model, run.spec), x_fit=run.x_all[fit_rows],
                         y_fit=run.y_index[fit_rows], x_val=run.x_all[held_rows], y_val=run.y_index[held_rows],
                         num_classes=run.num_classes, linear_probe=config.mode == "linear",
                         class_weighting=config.class_weighting, settings=_fit_settings(config), device=run.device,
                         seed=seed, progress=run.progress, label=label)
    model.load_state_dict(result.state)
    weights = class_weights(run.y_index[fit_rows], run.num_classes) if config.class_weighting else None
    calibration = fit_calibration(_logits(run, model, held_rows), run.y_index[held_rows], class_weights=weights)
    return _CalibratedNetwork(model, calibration, result.best_epoch, result.epochs_run, held_rows)


def _cross_validate_network(run: _Run) -> _Fitted:
    """A network per fold by the deployed recipe, its own calibration applied to its test fold
    (nested out-of-fold probabilities), then the deployed network by the same recipe on all data."""
    oof_logits = np.zeros((len(run.y_index), run.num_classes))
    oof = np.zeros_like(oof_logits)
    fold_fits: list[NetworkFold | SvmFold] = []
    for k, (train, test) in enumerate(run.folds, start=1):
        fitted = _fit_calibrated(run, train, seed=run.config.seed + k, label=f"fold {k}/{len(run.folds)}")
        oof_logits[test] = _logits(run, fitted.model, test)
        oof[test] = fitted.calibration.apply(oof_logits[test])
        fold_fits.append({"best_epoch": fitted.best_epoch, "epochs_run": fitted.epochs_run})
    final = _fit_calibrated(run, np.arange(len(run.y_index)), seed=run.config.seed, label="final fit")
    held_patients = len(set(run.groups[final.held_out_rows].tolist()))
    calibration: CalibrationReport = {
        "method": "prior-corrected temperature and bias scaling: softmax((z - log class weight) / T + b), "
                  "fitted by log-likelihood on a held-out patient split of the same fit",
        **final.calibration.to_json(run.classes),
        "fitted_on": f"{len(final.held_out_rows)} held-out lesions of {held_patients} patients of the final fit",
        "out_of_fold_log_loss_uncalibrated": log_loss(run.y_index, softmax(oof_logits)),
        "out_of_fold_log_loss": log_loss(run.y_index, oof),
        "per_class": per_class_reliability(run.y_index, oof, run.classes)}
    state = {k: v.detach().cpu() for k, v in final.model.state_dict().items()}
    return _Fitted(probabilities=oof, fold_fits=fold_fits, state=state, svm=None, calibration_map=final.calibration,
                   calibration=calibration,
                   final_fit={"epochs": final.best_epoch, "calibration_lesions": int(len(final.held_out_rows)),
                              "calibration_patients": held_patients,
                              "rule": "the folds' recipe: early stopping and calibration on a patient-level "
                                      "held-out split of the training patients"})


def _mean_of(summaries: Sequence[LabelSummary]) -> LabelSummary:
    return {"accuracy": float(np.mean([s["accuracy"] for s in summaries])),
            "balanced_accuracy": float(np.mean([s["balanced_accuracy"] for s in summaries])),
            "macro_f1": float(np.mean([s["macro_f1"] for s in summaries]))}


def _abstention(run: _Run, probabilities: np.ndarray) -> tuple[np.ndarray, AbstentionReport, str]:
    """Out-of-fold labels with abstention, the deployed threshold, and how the labels were made."""
    config = run.config
    if config.target_coverage is None:
        threshold = config.abstention_threshold
        labels = apply_abstention(probabilities, run.classes, threshold)
        rule, how = "fixed threshold (--abstain-below)", "the fixed threshold"
    else:
        threshold = threshold_for_coverage(probabilities, config.target_coverage)
        labels, _ = cross_fitted_labels(probabilities, run.classes, [test for _, test in run.folds],
                                        config.target_coverage)
        rule = "the lowest top-class probability that answers the target coverage of the out-of-fold lesions"
        how = "each fold's threshold chosen on the other folds' out-of-fold probabilities (cross-fitted)"
    deployed = apply_abstention(probabilities, run.classes, threshold)
    report: AbstentionReport = {"threshold": float(threshold), "target_coverage": config.target_coverage,
                                "rule": rule,
                                "out_of_fold_coverage": float(np.mean(deployed != "indeterminate"))}
    return labels, report, how


def _cv_report(run: _Run, predicted: np.ndarray, fold_fits: list[NetworkFold | SvmFold], how: str
               ) -> CrossValidationReport:
    """Each fold's metrics and majority baseline from the out-of-fold labels (abstentions count as
    wrong), their means, and the coverage."""
    per_fold: list[FoldReport] = []
    for k, (fit, (train, test)) in enumerate(zip(fold_fits, run.folds, strict=True), start=1):
        per_fold.append({
            "fold": k, **fit, "lesions_test": int(len(test)), "patients_test": int(len(set(run.groups[test].tolist()))),
            "metrics": classification_summary(run.y_labels[test], predicted[test], labels=run.classes),
            "majority_baseline": majority_baseline(run.y_labels[test], y_reference=run.y_labels[train],
                                                   labels=run.classes)})
    return {"folds": run.config.folds, "split": "patient-level StratifiedGroupKFold", "per_fold": per_fold,
            "mean": _mean_of([r["metrics"] for r in per_fold]),
            "majority_baseline_mean": _mean_of([r["majority_baseline"] for r in per_fold]),
            "out_of_fold": classification_summary(run.y_labels, predicted, labels=run.classes),
            "coverage": coverage(run.y_labels, predicted),
            "abstention": f"indeterminate counts as wrong in the metrics; thresholds: {how}"}


def _checked_targets(n_images: int, labels: Sequence[str], patient_ids: Sequence[str], classes: list[str]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (object array), patient ids (str array) and class indices, after checking they fit."""
    y_labels, groups = np.asarray(labels, dtype=object), np.asarray(patient_ids, dtype=object).astype(str)
    if not (n_images == len(y_labels) == len(groups)):
        raise ValueError(f"{n_images} images, {len(y_labels)} labels, {len(groups)} patient ids")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be at least two distinct labels, got {classes}")
    unknown = sorted(set(y_labels.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"labels not in the task's classes {classes}: {unknown}")
    return y_labels, groups, np.array([classes.index(y) for y in y_labels], dtype=np.int64)


def train_model(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str], patient_ids: Sequence[str], *,
                classes: Sequence[str], config: TrainingConfig, registry: Registry, weights_dir: Path,
                progress: ProgressCallback | None = None, study_uids: Sequence[str] | None = None) -> TrainedModel:
    """Cross-validate, calibrate and fit the final model on composites (HxWx3 uint8 or float 0-1).

    ``study_uids`` (one per image, optional) are recorded, hashed, beside the patients."""
    classes = list(classes)
    y_labels, groups, y_index = _checked_targets(len(images), labels, patient_ids, classes)
    if study_uids is not None and len(study_uids) != len(y_labels):
        raise ValueError(f"{len(y_labels)} images, {len(study_uids)} study UIDs")
    spec = registry.get(config.architecture)
    preprocessing = Preprocessing(input_size=config.input_size or spec.input_size)
    device = resolve_device(config.device)
    starter = _Starter(spec, len(classes), random_init=config.random_init, weights_dir=weights_dir)
    run = _Run(config=config, spec=spec, classes=classes, y_labels=y_labels, y_index=y_index, groups=groups,
               x_all=to_input_tensor(images, preprocessing),  # normalised once, on CPU
               folds=patient_folds(y_labels, groups, folds=config.folds, seed=config.seed), device=device,
               starter=starter, progress=progress)
    with deterministic(device):
        fitted = _cross_validate_svm(run) if config.mode == "svm" else _cross_validate_network(run)
    predicted, abstention, how = _abstention(run, fitted.probabilities)
    ids = TrainingIds(sorted(set(groups.tolist())), sorted({str(s) for s in study_uids or [] if s}))
    return TrainedModel(spec=spec, config=config, classes=classes, preprocessing=preprocessing, state=fitted.state,
                        svm=fitted.svm, weights_origin=starter.origin,
                        temperature=float(fitted.calibration_map.temperature),
                        cv=_cv_report(run, predicted, fitted.fold_fits, how), calibration=fitted.calibration,
                        data_summary=data_summary(y_labels, groups, classes), final_fit=fitted.final_fit,
                        abstention=abstention, training_ids=ids)
