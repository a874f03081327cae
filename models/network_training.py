"""One network fit: mini-batches, augmentation, class weighting, early stopping.

Shared by fine-tuning and linear probing (which differ only in what is trainable), by every CV fold
and by the final fit, so what is measured in CV is exactly what is deployed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from models.device import autocast, memory_format
from models.transforms import Augmentation, augment

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    patience: int
    augmentation: Augmentation
    mixed_precision: bool
    channels_last: bool
    schedule_epochs: int = 0  # cosine schedule length; 0: ``epochs``. The final fit stops early on the
    # folds' schedule, so that it ends where the cross-validated (and calibrated) fits ended.


@dataclass
class FitResult:
    state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based; the epoch whose weights were kept
    epochs_run: int
    history: list[dict[str, float]]


def class_weights(y_index: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights (mean 1 over present classes); absent classes weigh 0."""
    counts = np.bincount(y_index, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return weights


def set_trainable(model: nn.Module, head: nn.Module, *, linear_probe: bool) -> list[torch.nn.Parameter]:
    for parameter in model.parameters():
        parameter.requires_grad_(not linear_probe)
    for parameter in head.parameters():
        parameter.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on a batch of one
        batches[-2] = torch.cat([batches[-2], batches[-1]])
        batches.pop()
    return batches


def _loss(model: nn.Module, inputs: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
          device: torch.device, settings: FitSettings) -> tuple[torch.Tensor, torch.Tensor]:
    with autocast(device, settings.mixed_precision):
        logits = model(inputs)
    logits = logits.float()
    return functional.cross_entropy(logits, y, weight=weights), logits


def predict_logits(model: nn.Module, inputs: torch.Tensor, device: torch.device, *, batch_size: int = 64,
                   mixed_precision: bool = True, channels_last: bool = True) -> np.ndarray:
    """Logits of a CPU batch in eval mode, computed on ``device`` in chunks."""
    model.eval()
    fmt = memory_format(device, channels_last)
    out = []
    with torch.inference_mode():
        for chunk in torch.split(inputs, batch_size):
            chunk = chunk.to(device, non_blocking=True).contiguous(memory_format=fmt)
            with autocast(device, mixed_precision):
                out.append(model(chunk).float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def fit_network(model: nn.Module, head: nn.Module, *, x_fit: torch.Tensor, y_fit: np.ndarray,
                x_val: torch.Tensor | None, y_val: np.ndarray | None, num_classes: int, linear_probe: bool,
                class_weighting: bool, settings: FitSettings, device: torch.device, seed: int,
                progress: ProgressCallback | None = None, label: str = "fit") -> FitResult:
    """Train ``model`` in place; with validation data, keep the epoch of lowest validation loss and
    stop after ``patience`` epochs without improvement. Without it, train ``settings.epochs``."""
    generator = torch.Generator().manual_seed(seed)
    fmt = memory_format(device, settings.channels_last)
    model.to(device).to(memory_format=fmt)
    parameters = set_trainable(model, head, linear_probe=linear_probe)
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=max(1, settings.schedule_epochs or settings.epochs))
    weight_np = class_weights(y_fit, num_classes) if class_weighting else np.ones(num_classes)
    weights = torch.tensor(weight_np, dtype=torch.float32, device=device)
    y_fit_t = torch.as_tensor(y_fit, dtype=torch.long)
    best_loss, best_epoch, best_state, stale = float("inf"), settings.epochs, None, 0
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        if linear_probe:  # a frozen backbone keeps its ImageNet BatchNorm statistics and no dropout
            model.eval()
        total, seen = 0.0, 0
        for index in _batches(len(y_fit_t), settings.batch_size, generator):
            inputs = x_fit[index].to(device, non_blocking=True)
            inputs = augment(inputs, settings.augmentation, generator).contiguous(memory_format=fmt)
            loss, _ = _loss(model, inputs, y_fit_t[index].to(device), weights, device, settings)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        scheduler.step()
        record = {"epoch": float(epoch), "train_loss": total / max(seen, 1)}
        if x_val is not None and y_val is not None and len(y_val):
            logits = torch.from_numpy(predict_logits(model, x_val, device, batch_size=settings.batch_size,
                                                     mixed_precision=settings.mixed_precision,
                                                     channels_last=settings.channels_last))
            val_loss = float(functional.cross_entropy(
                logits.float(), torch.as_tensor(y_val), weight=weights.cpu()))
            record["val_loss"] = val_loss
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                stale += 1
        history.append(record)
        log.debug("%s epoch %d %s", label, epoch, record)
        if progress:
            progress(label, epoch, settings.epochs)
        if best_state is not None and stale >= settings.patience:
            break
    if best_state is None:
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        best_epoch = epoch
    if progress:
        progress(label, settings.epochs, settings.epochs)
    return FitResult(best_state, best_epoch, epoch, history)
