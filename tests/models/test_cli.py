"""The model commands end to end on a tiny folder of composites."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.architectures import default_registry
from models.registry import Registry, WeightsEntry
from tests.models.conftest import CLASSES
from tests.models.synthetic import make_composites
from tests.models.test_weights import write_tiny_checkpoint
from worker.cli import COMMANDS, app, load_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    values = {"TRIPHASE_DATA_DIR": str(tmp_path / "data"), "TORCH_HOME": str(tmp_path / "torch")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TRIPHASE_CONFIG", raising=False)
    return values


def write_folder(root: Path) -> list[Path]:
    from PIL import Image

    data = make_composites(classes=CLASSES, patients_per_class=4, lesions_per_patient=2, size=32, seed=0)
    root.mkdir(parents=True)
    paths = []
    with (root / "composites.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "study_uid", "lesion_id", "label", "path"])
        for i, (image, label, patient) in enumerate(zip(data.images, data.labels, data.patient_ids, strict=True)):
            name = f"c{i}.png" if i % 2 else f"c{i}.npy"
            if name.endswith(".png"):
                Image.fromarray(image).save(root / name)
            else:
                np.save(root / name, image.astype(np.float32) / 255.0)
            writer.writerow([patient, f"1.2.3.{i}", f"L{i % 2 + 1}", label, name])
            paths.append(root / name)
    (root / "composites.json").write_text(json.dumps({"channel_recipe": ["arterial", "t2_haste", "t1_in"],
                                                      "windowing": {"method": "percentile 1-99"}}))
    return paths


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_train_list_show_predict(env: dict[str, str], tmp_path: Path) -> None:
    paths = write_folder(tmp_path / "composites")
    result = invoke("train", str(tmp_path / "composites"), "--task", "demo", "--classes", ",".join(CLASSES),
                    "--arch", "tinycnn", "--random-init", "--folds", "2", "--epochs", "2", "--input-size", "32",
                    "--json")
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["architecture"] == "tinycnn" and trained["weights_origin"] == "random-init"
    assert "random" in result.stderr.lower()
    model_hash = trained["hash"]
    assert Path(env["TRIPHASE_DATA_DIR"], "models", model_hash).is_dir()

    listed = json.loads(invoke("models", "list", "--json").stdout)
    assert [m["hash"] for m in listed] == [model_hash]
    assert invoke("models", "list").exit_code == 0

    shown = json.loads(invoke("models", "show", model_hash[:10], "--json").stdout)
    assert shown["manifest"]["input"]["channel_recipe"] == ["arterial", "t2_haste", "t1_in"]
    assert shown["manifest"]["input"]["windowing"] == {"method": "percentile 1-99"}
    assert "RANDOM INITIALISATION" in invoke("models", "show", model_hash[:10]).stdout

    result = invoke("predict", model_hash[:10], str(paths[0]), str(paths[1]), "--json", "--tta",
                    "--heatmap-dir", str(tmp_path / "maps"))
    assert result.exit_code == 0, result.output
    predicted = json.loads(result.stdout)
    assert predicted["model"] == model_hash and len(predicted["predictions"]) == 2
    for row in predicted["predictions"]:
        assert row["label"] in [*CLASSES, "indeterminate"] and Path(row["heatmap"]).is_file()
    text = invoke("predict", model_hash[:10], str(paths[1]), "--abstain-below", "0.99")
    assert text.exit_code == 0 and str(paths[1]) in text.stdout


def test_weights_list_and_import(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = write_tiny_checkpoint(tmp_path / "downloads")
    registry = Registry()
    for spec in default_registry():
        registry.register(replace(spec, weights=WeightsEntry(source.name)) if spec.name == "tinycnn" else spec)
    monkeypatch.setattr("worker.training.cli.default_registry", lambda: registry)
    result = invoke("weights", "import", str(source))
    assert result.exit_code == 0, result.output
    checkpoints = Path(env["TORCH_HOME"], "hub", "checkpoints")
    assert (checkpoints / source.name).is_file()
    rows = {r["architecture"]: r for r in json.loads(invoke("weights", "list", "--json", "--verify").stdout)["weights"]}
    assert rows["tinycnn"]["present"] and rows["tinycnn"]["verified"]
    assert rows["vgg16"]["file_name"] == "vgg16-397923af.pth" and not rows["vgg16"]["present"]
    assert invoke("weights", "list").exit_code == 0


def test_errors_are_one_line_with_the_documented_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    write_folder(tmp_path / "composites")
    environment = dict(os.environ, **env, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-c", "from worker.cli import app; app()"]
    missing = subprocess.run([*base, "train", str(tmp_path / "composites"), "--task", "mri-ehcc", "--arch", "vgg16",
                              "--classes", ",".join(CLASSES)], capture_output=True, text=True, env=environment,
                             timeout=120)
    assert missing.returncode == 1
    assert "vgg16-397923af.pth" in missing.stderr and "Traceback" not in missing.stderr
    assert str(Path(env["TORCH_HOME"], "hub", "checkpoints")) in missing.stderr
    usage = subprocess.run([*base, "train", str(tmp_path / "composites"), "--task", "x", "--mode", "bogus"],
                           capture_output=True, text=True, env=environment, timeout=120)
    assert usage.returncode == 2
    unknown = subprocess.run([*base, "models", "show", "abcdef"], capture_output=True, text=True, env=environment,
                             timeout=120)
    assert unknown.returncode == 1 and "no model abcdef" in unknown.stderr


def test_the_cli_starts_without_torch() -> None:
    code = "import sys, worker.cli; assert 'torch' not in sys.modules and 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)


def test_help_lists_every_command_without_importing_one() -> None:
    modules = sorted({entry.module for entry in COMMANDS.values()})
    code = ("import sys\nfrom worker.cli import app\ntry:\n    app()\nexcept SystemExit:\n    pass\n"
            f"loaded = [m for m in {modules!r} if m in sys.modules]\nassert not loaded, loaded")
    run = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200"), timeout=60)
    assert run.returncode == 0, run.stderr
    for name, entry in COMMANDS.items():
        assert f" {name} " in run.stdout and entry.help in run.stdout


def test_the_table_says_what_each_command_says() -> None:
    for name, entry in COMMANDS.items():
        command = load_command(name)
        assert command.name == name
        assert (command.help or "").split("\n\n")[0].strip() == entry.help, name
