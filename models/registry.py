"""The architectures the product can train, as data: builder, input size, weights file, layers.

The papers compare seven ImageNet CNNs; a site must be able to add one without touching the
training code. An :class:`ArchitectureSpec` bundles what the rest of models/ needs to know about one
network (how to build it, where its head is, which layer gives the penultimate features and which
one Grad-CAM watches, which torchvision weights file it starts from), in the spirit of torchvision's
``Weights`` entries. A :class:`Registry` is an explicit object (no module-level mutable state) and
refuses duplicate names, so two plugins cannot silently shadow each other.

This module is data only and never imports torch, so the command line can name architectures
cheaply; :func:`models.architectures.default_registry` fills a registry with the built-in networks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

#: torch.hub's convention: the hex digits between the last ``-`` and the extension are a prefix of
#: the file's sha256.
HASH_PREFIX_RE = re.compile(r"-([a-f0-9]{6,64})\.")


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained checkpoint, named as torchvision names it (``vgg16-397923af.pth``)."""

    file_name: str
    url: str = ""
    description: str = "ImageNet-1k (torchvision IMAGENET1K_V1)"

    def __post_init__(self) -> None:
        if "/" in self.file_name or "\\" in self.file_name:
            raise ValueError(f"file_name must be a bare file name, got {self.file_name!r}")
        if HASH_PREFIX_RE.search(self.file_name) is None:
            raise ValueError(f"file_name {self.file_name!r} carries no '-<sha256 prefix>.' as torchvision's do")

    @property
    def sha256_prefix(self) -> str:
        match = HASH_PREFIX_RE.search(self.file_name)
        assert match is not None  # checked in __post_init__
        return match.group(1)


Builder = Callable[..., "nn.Module"]


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything models/ needs to know about one network.

    ``build(num_classes=..., pretrained_layout=...)`` returns the torchvision module with its
    ImageNet head (1000 classes) so that pretrained weights load unchanged; ``head_path`` names the
    final ``nn.Linear`` that :func:`models.architectures.replace_head` swaps for N classes.
    ``features_path`` names the module whose *output* is the penultimate feature vector (FC7 for
    VGG/AlexNet, the pooled features for the others); ``cam_layer`` names the last convolutional
    block whose activations Grad-CAM weighs.
    """

    name: str
    build: Builder
    input_size: int
    feature_dim: int
    head_path: str
    features_path: str
    cam_layer: str
    weights: WeightsEntry | None
    family: str = ""
    builder_options: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"architecture name must be lower-case identifier-like, got {self.name!r}")
        if self.input_size < 16:
            raise ValueError(f"input_size must be >= 16, got {self.input_size}")
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim must be positive, got {self.feature_dim}")


class Registry:
    """A name -> :class:`ArchitectureSpec` mapping that refuses duplicates."""

    def __init__(self) -> None:
        self._specs: dict[str, ArchitectureSpec] = {}

    def register(self, spec: ArchitectureSpec) -> ArchitectureSpec:
        if spec.name in self._specs:
            raise ValueError(f"architecture {spec.name!r} is already registered")
        self._specs[spec.name] = spec
        return spec

    def get(self, name: str) -> ArchitectureSpec:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise LookupError(f"unknown architecture {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ArchitectureSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)


#: The seven architectures of the papers, in the order the papers list them.
PAPER_ARCHITECTURES: tuple[str, ...] = (
    "alexnet", "vgg16", "vgg19", "googlenet", "inception_v3", "resnet50", "resnet101",
)

