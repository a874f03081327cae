"""Training entry point: arrays, labels and patient ids in; a trained, cross-validated model out.

``train_model`` knows nothing of files or DICOM: a folder of prepared composites and composites built
from studies (by the same code the inference path uses) feed it the same way. It runs patient-level
stratified k-fold cross-validation (the metrics a user quotes), fits the temperature on the
out-of-fold logits, then fits the deployed model on all the data for the median number of epochs
early stopping chose in the folds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.architectures import extract_features, head_module, replace_head
from models.calibration import fit_temperature, softmax
from models.device import autocast, deterministic, memory_format, resolve_device
from models.metrics import classification_summary, log_loss, majority_baseline, mean_of
from models.network_training import FitSettings, ProgressCallback, fit_network, predict_logits
from models.registry import ArchitectureSpec, Registry
from models.splits import patient_folds, validation_split
from models.svm import fit_svm, svm_probabilities
from models.transforms import Augmentation, Preprocessing, to_input_tensor
from models.weights import RANDOM_INIT, WeightsOrigin, load_pretrained

if TYPE_CHECKING:
    import torch
    from torch import nn

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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("epochs and patience must be >= 1, batch_size >= 2")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if not 0.0 <= self.abstention_threshold < 1.0:
            raise ValueError(f"abstention_threshold must be in [0, 1), got {self.abstention_threshold}")

    def effective_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if (self.mode == "finetune" and not self.random_init) else 1e-3

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["augmentation"] = self.augmentation.to_dict()
        data["learning_rate"] = self.effective_learning_rate()
        return data


@dataclass
class TrainedModel:
    """The outcome of :func:`train_model`, ready to be written as an artifact."""

    spec: ArchitectureSpec
    config: TrainingConfig
    classes: list[str]
    preprocessing: Preprocessing
    state: dict[str, torch.Tensor]
    svm: Any | None
    weights_origin: WeightsOrigin
    temperature: float
    cv: dict[str, Any]
    calibration: dict[str, Any]
    data_summary: dict[str, Any]
    final_fit: dict[str, Any]


def data_summary(labels: np.ndarray, patient_ids: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
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
        import torch  # noqa: PLC0415

        torch.manual_seed(seed)
        model = self.spec.build(**self.spec.builder_options)
        if self.imagenet_state is not None:
            model.load_state_dict(self.imagenet_state)
        return replace_head(model, self.spec, self.num_classes)


def _features(model: nn.Module, spec: ArchitectureSpec, inputs: torch.Tensor, device: torch.device,
              config: TrainingConfig) -> np.ndarray:
    import torch  # noqa: PLC0415

    model.to(device, memory_format=memory_format(device, config.channels_last)).eval()
    out = []
    with torch.inference_mode():
        for chunk in inputs.split(config.batch_size):
            chunk = chunk.to(device).contiguous(memory_format=memory_format(device, config.channels_last))
            with autocast(device, config.mixed_precision):
                out.append(extract_features(model, spec, chunk).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def train_model(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str], patient_ids: Sequence[str], *,
                classes: Sequence[str], config: TrainingConfig, registry: Registry, weights_dir: Path,
                progress: ProgressCallback | None = None) -> TrainedModel:
    """Cross-validate, calibrate and fit the final model on composites (HxWx3 uint8 or float 0-1)."""
    classes = list(classes)
    y_labels, groups = np.asarray(labels, dtype=object), np.asarray(patient_ids, dtype=object).astype(str)
    if not (len(images) == len(y_labels) == len(groups)):
        raise ValueError(f"{len(images)} images, {len(y_labels)} labels, {len(groups)} patient ids")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be at least two distinct labels, got {classes}")
    unknown = sorted(set(y_labels.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"labels not in the task's classes {classes}: {unknown}")
    y_index = np.array([classes.index(y) for y in y_labels], dtype=np.int64)
    spec = registry.get(config.architecture)
    preprocessing = Preprocessing(input_size=config.input_size or spec.input_size)
    device = resolve_device(config.device)
    starter = _Starter(spec, len(classes), random_init=config.random_init, weights_dir=weights_dir)
    x_all = to_input_tensor(images, preprocessing)  # normalised once, on CPU
    folds = patient_folds(y_labels, groups, folds=config.folds, seed=config.seed)
    settings = FitSettings(config.epochs, config.batch_size, config.effective_learning_rate(), config.weight_decay,
                           config.patience, config.augmentation, config.mixed_precision, config.channels_last)
    num_classes = len(classes)
    oof = np.zeros((len(y_index), num_classes))
    per_fold: list[dict[str, Any]] = []
    with deterministic(device):
        if config.mode == "svm":
            backbone = starter.new(config.seed)
            features = _features(backbone, spec, x_all, device, config)
            for k, (train, test) in enumerate(folds, start=1):
                svm = fit_svm(features[train], y_index[train], groups[train], seed=config.seed + k,
                              inner_folds=config.svm_inner_folds)
                oof[test] = svm_probabilities(svm, features[test], num_classes)
                per_fold.append({"fold": k, "svm": {"params": svm.best_params_,
                                                   "inner_cv_macro_f1": svm.inner_cv_macro_f1_}})
                if progress:
                    progress("cross-validation (SVM)", k, len(folds))
            final_svm = fit_svm(features, y_index, groups, seed=config.seed, inner_folds=config.svm_inner_folds)
            state = {k: v.detach().cpu() for k, v in backbone.state_dict().items()}
            temperature, probabilities = 1.0, oof
            calibration = {"method": "platt-sigmoid (CalibratedClassifierCV on patient-level inner folds)",
                           "temperature": 1.0, "out_of_fold_log_loss": log_loss(y_index, np.clip(oof, 1e-12, 1))}
            final_fit = {"svm": {"params": final_svm.best_params_,
                                 "inner_cv_macro_f1": final_svm.inner_cv_macro_f1_}}
        else:
            linear = config.mode == "linear"
            best_epochs = []
            for k, (train, test) in enumerate(folds, start=1):
                fit_idx, val_idx = validation_split(y_labels[train], groups[train],
                                                    fraction=config.validation_fraction, seed=config.seed + k)
                fit_rows, val_rows = train[fit_idx], train[val_idx]
                model = starter.new(config.seed + k)
                result = fit_network(model, head_module(model, spec), x_fit=x_all[fit_rows], y_fit=y_index[fit_rows],
                                     x_val=x_all[val_rows], y_val=y_index[val_rows], num_classes=num_classes,
                                     linear_probe=linear, class_weighting=config.class_weighting,
                                     settings=settings, device=device, seed=config.seed + k, progress=progress,
                                     label=f"fold {k}/{len(folds)}")
                model.load_state_dict(result.state)
                oof[test] = predict_logits(model, x_all[test], device, batch_size=config.batch_size,
                                           mixed_precision=config.mixed_precision,
                                           channels_last=config.channels_last)
                best_epochs.append(result.best_epoch)
                per_fold.append({"fold": k, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run})
            temperature = fit_temperature(oof, y_index)
            probabilities = softmax(oof, temperature)
            calibration = {"method": "temperature scaling on out-of-fold logits", "temperature": temperature,
                           "out_of_fold_log_loss_uncalibrated": log_loss(y_index, softmax(oof)),
                           "out_of_fold_log_loss": log_loss(y_index, probabilities)}
            final_epochs = max(1, int(np.median(best_epochs)))
            final_settings = replace(settings, epochs=final_epochs, schedule_epochs=config.epochs)
            model = starter.new(config.seed)
            result = fit_network(model, head_module(model, spec), x_fit=x_all, y_fit=y_index, x_val=None,
                                 y_val=None, num_classes=num_classes, linear_probe=linear,
                                 class_weighting=config.class_weighting, settings=final_settings, device=device,
                                 seed=config.seed, progress=progress, label="final fit")
            state, final_svm = result.state, None
            final_fit = {"epochs": final_epochs, "rule": "median of the folds' early-stopping epochs, on the folds' learning-rate schedule"}
    predicted = np.array(classes, dtype=object)[probabilities.argmax(axis=1)]
    for record, (train, test) in zip(per_fold, folds, strict=True):
        record.update({"lesions_test": int(len(test)), "patients_test": int(len(set(groups[test].tolist()))),
                       "metrics": classification_summary(y_labels[test], predicted[test], labels=classes),
                       "majority_baseline": majority_baseline(y_labels[test], y_reference=y_labels[train],
                                                              labels=classes)})
    cv = {"folds": config.folds, "split": "patient-level StratifiedGroupKFold", "per_fold": per_fold,
          "mean": mean_of([r["metrics"] for r in per_fold]),
          "majority_baseline_mean": mean_of([r["majority_baseline"] for r in per_fold]),
          "out_of_fold": classification_summary(y_labels, predicted, labels=classes)}
    return TrainedModel(spec=spec, config=config, classes=classes, preprocessing=preprocessing, state=state,
                        svm=final_svm, weights_origin=starter.origin, temperature=float(temperature), cv=cv,
                        calibration=calibration, data_summary=data_summary(y_labels, groups, classes),
                        final_fit=final_fit)
