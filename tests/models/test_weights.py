"""Offline weights: torchvision's cache layout, hash prefixes, clear errors, import."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from models.architectures import build_tinycnn, default_registry, load_pretrained
from models.registry import PAPER_ARCHITECTURES, Registry, WeightsEntry
from models.weights import (
    WeightsHashMismatchError,
    WeightsNotFoundError,
    default_weights_dir,
    import_weights,
    list_weights,
)


def write_tiny_checkpoint(folder: Path, seed: int = 3) -> tuple[Path, str]:
    """A tinycnn ImageNet-layout checkpoint saved under a torchvision-style name with its real hash."""
    import torch

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "scratch.pth"
    torch.save(build_tinycnn().state_dict(), scratch)
    digest = hashlib.sha256(scratch.read_bytes()).hexdigest()
    target = folder / f"tinycnn-{digest[:8]}.pth"
    scratch.rename(target)
    return target, digest


def registry_with_tiny_weights(file_name: str) -> Registry:
    registry = Registry()
    for spec in default_registry():
        registry.register(replace(spec, weights=WeightsEntry(file_name)) if spec.name == "tinycnn" else spec)
    return registry


def test_loads_from_torch_hub_cache_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = default_weights_dir()
    assert cache == tmp_path / "torch" / "hub" / "checkpoints"
    path, digest = write_tiny_checkpoint(cache)
    registry = registry_with_tiny_weights(path.name)
    spec = registry.get("tinycnn")
    model = build_tinycnn()
    origin = load_pretrained(model, spec, cache)
    assert origin.kind == "imagenet" and origin.sha256 == digest and origin.file_name == path.name
    saved = torch.load(path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_a_file_whose_hash_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    path, _ = write_tiny_checkpoint(tmp_path)
    wrong_name = "tinycnn-00000000.pth"
    shutil.copy(path, tmp_path / wrong_name)
    spec = registry_with_tiny_weights(wrong_name).get("tinycnn")
    with pytest.raises(WeightsHashMismatchError, match="00000000"):
        load_pretrained(build_tinycnn(), spec, tmp_path)


@pytest.mark.parametrize("name", PAPER_ARCHITECTURES)
def test_missing_weights_name_the_exact_file_and_folder(name: str, tmp_path: Path) -> None:
    spec = default_registry().get(name)
    with pytest.raises(WeightsNotFoundError) as caught:
        load_pretrained(build_tinycnn(), spec, tmp_path)  # fails before touching the model
    message = str(caught.value)
    assert spec.weights is not None and spec.weights.file_name in message
    assert str(tmp_path) in message and "--random-init" in message


def test_import_recognises_the_architecture_by_hash_and_refuses_strangers(tmp_path: Path) -> None:
    source, digest = write_tiny_checkpoint(tmp_path / "downloads")
    renamed = source.with_name("my-download.pth")
    source.rename(renamed)
    registry = registry_with_tiny_weights(source.name)
    spec, target = import_weights(renamed, registry, tmp_path / "weights")
    assert spec.name == "tinycnn" and target == tmp_path / "weights" / source.name
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    assert import_weights(renamed, registry, tmp_path / "weights")[1] == target  # idempotent
    listed = {s.architecture: s for s in list_weights(registry, tmp_path / "weights", verify=True)}
    assert listed["tinycnn"].present and listed["tinycnn"].verified
    assert not listed["vgg16"].present
    stranger = tmp_path / "stranger.pth"
    stranger.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsHashMismatchError, match="no registered architecture"):
        import_weights(stranger, registry, tmp_path / "weights")
    with pytest.raises(WeightsHashMismatchError, match="vgg16-397923af.pth"):
        import_weights(stranger, registry, tmp_path / "weights", architecture="vgg16")
