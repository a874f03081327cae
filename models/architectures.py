"""Builders of the registered networks, head replacement, pretrained weights and penultimate features.

torchvision builders are called with ``weights=None`` (this module never downloads anything); the
ImageNet checkpoint, when wanted, is loaded afterwards from a local file verified by
:mod:`models.weights`. GoogLeNet and Inception-v3 are built as torchvision builds them for its
pretrained weights (``transform_input=True``, which converts our ImageNet-normalised input into the
scaling the Google checkpoints were trained with) but without the auxiliary heads, which transfer
learning on a few hundred lesions does not use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from models.registry import ArchitectureSpec, Builder, Registry, WeightsEntry
from models.weights import WeightsOrigin, locate_weights, verify_weights_file

log = logging.getLogger(__name__)

IMAGENET_CLASSES = 1000


def _torchvision_builder(name: str, **fixed: object) -> Builder:
    def build(*, num_classes: int = IMAGENET_CLASSES) -> nn.Module:
        if num_classes != IMAGENET_CLASSES:
            raise ValueError("build the ImageNet layout, then call replace_head")
        model: nn.Module = getattr(tvm, name)(weights=None, **fixed)
        return model

    build.__name__ = f"build_{name}"
    build.__doc__ = f"torchvision.models.{name} with its ImageNet head and random initialisation."
    return build


def build_tinycnn(*, num_classes: int = IMAGENET_CLASSES, width: int = 16) -> nn.Module:
    """A four-block CNN for tests and smoke runs: same interface as the big ones, trains in seconds."""

    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True)]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    model = nn.Sequential()
    model.add_module("features", nn.Sequential(*block(3, width, True), *block(width, 2 * width, True),
                                               *block(2 * width, 4 * width, True),
                                               *block(4 * width, 4 * width, False)))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    model.add_module("fc", nn.Linear(4 * width, num_classes))
    return model


def standard_specs() -> list[ArchitectureSpec]:
    """The papers' seven networks, ResNet-18 (a quick real network) and the tiny test CNN."""
    entry = WeightsEntry
    return [
        ArchitectureSpec("alexnet", _torchvision_builder("alexnet"), 224, 4096, "classifier.6",
                         "classifier.5", "features", entry("alexnet-owt-7be5be79.pth"), family="alexnet"),
        ArchitectureSpec("vgg16", _torchvision_builder("vgg16"), 224, 4096, "classifier.6",
                         "classifier.4", "features", entry("vgg16-397923af.pth"), family="vgg"),
        ArchitectureSpec("vgg19", _torchvision_builder("vgg19"), 224, 4096, "classifier.6",
                         "classifier.4", "features", entry("vgg19-dcbb9e9d.pth"), family="vgg"),
        ArchitectureSpec("googlenet", _torchvision_builder("googlenet", aux_logits=False, transform_input=True,
                                                           init_weights=True),
                         224, 1024, "fc", "avgpool", "inception5b", entry("googlenet-1378be20.pth"),
                         family="inception"),
        ArchitectureSpec("inception_v3", _torchvision_builder("inception_v3", aux_logits=False,
                                                              transform_input=True, init_weights=True),
                         299, 2048, "fc", "avgpool", "Mixed_7c", entry("inception_v3_google-0cc3c7bd.pth"),
                         family="inception"),
        ArchitectureSpec("resnet50", _torchvision_builder("resnet50"), 224, 2048, "fc", "avgpool", "layer4",
                         entry("resnet50-0676ba61.pth"), family="resnet"),
        ArchitectureSpec("resnet101", _torchvision_builder("resnet101"), 224, 2048, "fc", "avgpool", "layer4",
                         entry("resnet101-63fe2227.pth"), family="resnet"),
        ArchitectureSpec("resnet18", _torchvision_builder("resnet18"), 224, 512, "fc", "avgpool", "layer4",
                         entry("resnet18-f37072fd.pth"), family="resnet"),
        ArchitectureSpec("tinycnn", build_tinycnn, 64, 64, "fc", "pool", "features", None, family="test"),
    ]


def default_registry() -> Registry:
    """A new registry holding the papers' seven architectures, resnet18 and the tiny test CNN."""
    registry = Registry()
    for spec in standard_specs():
        registry.register(spec)
    return registry


def _parent_and_attr(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent_path, _, attr = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), attr


def replace_head(model: nn.Module, spec: ArchitectureSpec, num_classes: int) -> nn.Module:
    """Swap the final ImageNet ``Linear`` for a fresh one with ``num_classes`` outputs."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    old = head_module(model, spec)
    parent, attr = _parent_and_attr(model, spec.head_path)
    setattr(parent, attr, nn.Linear(old.in_features, num_classes))
    return model


def head_module(model: nn.Module, spec: ArchitectureSpec) -> nn.Linear:
    """The classifier head ``spec.head_path`` names: a ``Linear``, or a :class:`TypeError`."""
    head = model.get_submodule(spec.head_path)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{spec.name}: {spec.head_path} is {type(head).__name__}, expected Linear")
    return head


def build_model(spec: ArchitectureSpec, num_classes: int) -> nn.Module:
    """The network with its head replaced for ``num_classes``, random initialisation."""
    model = spec.build(**spec.builder_options)
    return replace_head(model, spec, num_classes)


def load_pretrained(model: nn.Module, spec: ArchitectureSpec, weights_dir: Path) -> WeightsOrigin:
    """Load the verified ImageNet checkpoint into ``model`` (built with its ImageNet head)."""
    path = locate_weights(spec, weights_dir)
    assert spec.weights is not None
    digest = verify_weights_file(path, spec.weights.file_name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.state_dict()
    unused = sorted(k for k in state if k not in own)
    if any(not k.startswith(("AuxLogits.", "aux1.", "aux2.")) for k in unused):
        raise ValueError(f"{path.name} does not fit {spec.name}: unexpected keys {unused[:5]}")
    missing = sorted(k for k in own if k not in state)
    if missing:
        raise ValueError(f"{path.name} does not fit {spec.name}: missing keys {missing[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    log.info("loaded %s weights from %s (sha256 %s)", spec.name, path, digest[:12])
    return WeightsOrigin("imagenet", spec.weights.file_name, digest)


def extract_features(model: nn.Module, spec: ArchitectureSpec, batch: torch.Tensor) -> torch.Tensor:
    """Penultimate features (N, feature_dim): the output of ``spec.features_path``, flattened.

    Runs the whole forward pass with a hook rather than re-assembling the network by hand, so the
    features are exactly the ones the classifier head sees (eval mode: dropout is off).
    """
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(spec.features_path).register_forward_hook(
        lambda _m, _i, output: captured.append(output))
    try:
        model(batch)
    finally:
        handle.remove()
    return captured[0].flatten(1)
