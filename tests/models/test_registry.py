"""Every registered architecture builds, runs at its input size, and has the right head and features."""

from __future__ import annotations

import inspect

import pytest

from models.architectures import build_model, build_tinycnn, default_registry, extract_features, standard_specs
from models.registry import PAPER_ARCHITECTURES, ArchitectureSpec, Registry, WeightsEntry

ALL = [spec.name for spec in standard_specs()]


def test_the_seven_paper_architectures_and_a_test_one_are_registered(registry: Registry) -> None:
    assert set(PAPER_ARCHITECTURES) <= set(registry.names())
    assert "tinycnn" in registry
    assert registry.get("inception_v3").input_size == 299
    assert {registry.get(n).input_size for n in PAPER_ARCHITECTURES if n != "inception_v3"} == {224}


@pytest.mark.parametrize("name", ALL)
def test_builds_and_runs_one_forward_pass_with_the_new_head(name: str, registry: Registry) -> None:
    import torch

    spec = registry.get(name)
    torch.manual_seed(0)
    model = build_model(spec, num_classes=5).eval()
    assert model.get_submodule(spec.head_path).out_features == 5
    with torch.inference_mode():
        batch = torch.randn(1, 3, spec.input_size, spec.input_size)
        logits = model(batch)
        features = extract_features(model, spec, batch)
    assert logits.shape == (1, 5)
    assert torch.isfinite(logits).all()
    assert features.shape == (1, spec.feature_dim)


def test_weights_file_names_are_torchvisions() -> None:
    import torchvision.models as tvm

    enums = {"alexnet": tvm.AlexNet_Weights, "vgg16": tvm.VGG16_Weights, "vgg19": tvm.VGG19_Weights,
             "googlenet": tvm.GoogLeNet_Weights, "inception_v3": tvm.Inception_V3_Weights,
             "resnet50": tvm.ResNet50_Weights, "resnet101": tvm.ResNet101_Weights, "resnet18": tvm.ResNet18_Weights}
    registry = default_registry()
    for name, enum in enums.items():
        assert registry.get(name).weights.file_name == enum.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    assert registry.get("vgg16").weights.sha256_prefix == "397923af"


def test_registry_refuses_a_duplicate_name(registry: Registry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("vgg16"))


def test_unknown_architecture_names_the_known_ones(registry: Registry) -> None:
    with pytest.raises(LookupError, match="vgg16"):
        registry.get("vgg17")


def test_builders_take_keyword_only_options() -> None:
    for spec in standard_specs():
        parameters = inspect.signature(spec.build).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), spec.name


def test_specs_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="name"):
        ArchitectureSpec("Bad Name", build_tinycnn, 224, 10, "fc", "pool", "features", None)
    with pytest.raises(ValueError, match="sha256 prefix"):
        WeightsEntry("vgg16.pth")
