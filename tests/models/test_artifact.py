"""Artifacts round-trip, are named by their content, change name when anything changes, never overwrite."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from models.artifact import (
    MANIFEST,
    WEIGHTS,
    ArtifactError,
    content_hash,
    list_artifacts,
    open_artifact,
    resolve_artifact,
    save_trained,
)


def test_round_trip_and_manifest_contents(tiny_artifact, trained_tiny) -> None:
    reopened = open_artifact(tiny_artifact.path)
    assert reopened.manifest == tiny_artifact.manifest
    assert reopened.hash == content_hash(reopened.manifest) == tiny_artifact.path.name
    m = reopened.manifest
    assert m["architecture"] == "tinycnn" and m["task"] == "test-task" and m["mode"] == "finetune"
    assert m["classes"] == trained_tiny.classes
    assert m["input"]["channel_recipe"] == ["arterial", "delayed", "pre"]
    assert m["input"]["windowing"] == {"arterial": [40, 350]}
    assert m["input"]["preprocessing"]["input_size"] == 32
    assert m["weights_origin"]["kind"] == "random-init" and m["random_init"] is True
    assert any("RANDOM INITIALISATION" in w for w in m["warnings"])
    assert m["training"]["data"]["patients"] == 24 and sum(m["training"]["data"]["lesions_per_class"].values()) == 48
    assert {"accuracy", "balanced_accuracy", "macro_f1"} <= set(m["cv"]["mean"])
    assert {"accuracy", "balanced_accuracy", "macro_f1"} <= set(m["cv"]["majority_baseline_mean"])
    assert m["calibration"]["temperature"] == pytest.approx(trained_tiny.temperature)
    assert {"torch", "torchvision", "scikit-learn", "numpy", "python"} <= set(m["versions"])
    assert m["created_at"] and m["files"][WEIGHTS]


def test_files_are_read_only(tiny_artifact) -> None:
    for child in tiny_artifact.path.iterdir():
        assert not child.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert not tiny_artifact.path.stat().st_mode & stat.S_IWUSR


def test_hash_changes_when_any_field_changes(tiny_artifact) -> None:
    manifest = tiny_artifact.manifest
    original = content_hash(manifest)
    for mutate in (lambda m: m.__setitem__("task", "other"),
                   lambda m: m["classes"].reverse(),
                   lambda m: m["input"]["channel_recipe"].reverse(),
                   lambda m: m["calibration"].__setitem__("temperature", 1.0),
                   lambda m: m["files"].__setitem__(WEIGHTS, "0" * 64),
                   lambda m: m.__setitem__("created_at", "2000-01-01T00:00:00+00:00")):
        changed = json.loads(json.dumps(manifest))
        mutate(changed)
        assert content_hash(changed) != original


def _writable_copy(artifact, tmp_path: Path) -> Path:
    copy = tmp_path / artifact.hash
    shutil.copytree(artifact.path, copy)
    for child in [copy, *copy.iterdir()]:
        child.chmod(0o755 if child.is_dir() else 0o644)
    return copy


def test_a_modified_weights_file_or_manifest_is_detected(tiny_artifact, tmp_path: Path) -> None:
    copy = _writable_copy(tiny_artifact, tmp_path / "a")
    with (copy / WEIGHTS).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match"):
        open_artifact(copy)
    copy = _writable_copy(tiny_artifact, tmp_path / "b")
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["abstention_threshold"] = 0.5
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="folder name"):
        open_artifact(copy)


def test_an_existing_artifact_is_never_overwritten(trained_tiny, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = save_trained(trained_tiny, tmp_path, task="t", channel_recipe=["a", "b", "c"], created_at=when)
    with pytest.raises(FileExistsError, match="immutable"):
        save_trained(trained_tiny, tmp_path, task="t", channel_recipe=["a", "b", "c"], created_at=when)
    other = save_trained(trained_tiny, tmp_path, task="t2", channel_recipe=["a", "b", "c"], created_at=when)
    assert other.hash != first.hash
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    assert {a.hash for a in list_artifacts(tmp_path)} == {first.hash, other.hash}


def test_model_argument_is_a_folder_or_a_unique_prefix(tiny_artifact, tmp_path: Path) -> None:
    models_dir = tiny_artifact.path.parent
    assert resolve_artifact(str(tiny_artifact.path), tmp_path).hash == tiny_artifact.hash
    assert resolve_artifact(tiny_artifact.hash[:8], models_dir).hash == tiny_artifact.hash
    with pytest.raises(ArtifactError, match="no model"):
        resolve_artifact("ffffffffff" if not tiny_artifact.hash.startswith("f") else "0000000000", models_dir)
    with pytest.raises(ArtifactError, match="neither"):
        resolve_artifact("not-a-hash", models_dir)
    fake = tmp_path / "models"
    for name in ("ab" + "0" * 62, "ab" + "1" * 62):
        (fake / name).mkdir(parents=True)
    with pytest.raises(ArtifactError, match="ambiguous"):
        resolve_artifact("ab", fake)
    assert os.access(tiny_artifact.path / MANIFEST, os.R_OK)
