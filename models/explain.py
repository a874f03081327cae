"""Where the model looked: Grad-CAM for networks, occlusion sensitivity for the SVM.

The heatmap is burned into the Secondary Capture beside the prediction, so a radiologist can see
at a glance whether the network looked at the lesion or at something else. Maps are returned at the
composite's own height and width, scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from models.registry import ArchitectureSpec


def _normalise(cam: torch.Tensor) -> np.ndarray:
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).clamp(0, 1).cpu().numpy().astype(np.float32)


def _resize(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return functional.interpolate(maps[None, None].float(), size=shape, mode="bilinear", align_corners=False)[0, 0]


def grad_cam(model: nn.Module, spec: ArchitectureSpec, inputs: torch.Tensor, class_index: Sequence[int],
             shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Grad-CAM (Selvaraju et al. 2017) of ``class_index[i]`` for each normalised input, in float32."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        captured.append(output)

    handle = model.get_submodule(spec.cam_layer).register_forward_hook(keep)
    model.eval()
    try:
        with torch.enable_grad():
            batch = inputs.detach().clone().float().requires_grad_(True)
            logits = model(batch)
            chosen = logits.gather(1, torch.as_tensor(list(class_index), device=logits.device)[:, None]).sum()
            (gradient,) = torch.autograd.grad(chosen, captured[0])
    finally:
        handle.remove()
    activation, gradient = captured[0].detach(), gradient.detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * activation).sum(dim=1))
    return [_normalise(_resize(cam, shape)) for cam, shape in zip(cams, shapes, strict=True)]


def occlusion_map(probability: Callable[[torch.Tensor], np.ndarray], inputs: torch.Tensor, class_index: int,
                  shape: tuple[int, int], *, grid: int = 8) -> np.ndarray:
    """How much the class probability drops when each of ``grid x grid`` patches is set to the mean
    colour (zero in normalised space): model-agnostic, used where gradients do not exist (SVM)."""
    _, _, h, w = inputs.shape
    ys, xs = np.linspace(0, h, grid + 1).astype(int), np.linspace(0, w, grid + 1).astype(int)
    variants = []
    for i in range(grid):
        for j in range(grid):
            occluded = inputs[0].clone()
            occluded[:, ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = 0.0
            variants.append(occluded)
    base = float(probability(inputs)[0, class_index])
    drops = base - probability(torch.stack(variants))[:, class_index]
    cam = torch.from_numpy(np.clip(drops, 0, None).reshape(grid, grid))
    return _normalise(_resize(cam, shape))
