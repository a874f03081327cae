"""``triphase weights``, ``train``, ``models`` and ``predict``: the model commands.

Thin: they read configuration and files, then call models/ (which reads neither).
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, TypedDict, TypeGuard

import numpy as np
import typer
from PIL import Image
from rich.console import Console
from rich.json import JSON
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from db.runtime import Runtime
from models.architectures import default_registry
from models.artifact import Artifact, list_artifacts, resolve_artifact, save_trained
from models.evaluation.metrics import LabelSummary
from models.inference import Classifier, Prediction
from models.tasks import TaskDefinition, known_task
from models.training import MODES, Mode, TrainedModel, TrainingConfig, train_model
from models.transforms import NO_AUGMENTATION, Augmentation
from models.weights import import_weights, list_weights, resolve_weights_dir
from worker.composite_folder import CompositeFolder, load_composite_folder, load_study_folder, read_image
from worker.settings import GroupingSettings, ModelsSection

log = logging.getLogger(__name__)

weights_app = typer.Typer(help="Pretrained ImageNet weights (offline).", no_args_is_help=True)
models_app = typer.Typer(help="Trained model artifacts.", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output only")]


def weights_dir(runtime: Runtime) -> Path:
    """The folder of pretrained weights: ``[models] weights_dir``, else torchvision's own cache."""
    return resolve_weights_dir(runtime.section(ModelsSection).weights_dir)


def _is_mode(text: str) -> TypeGuard[Mode]:
    return text in MODES


def parse_mode(text: str) -> Mode:
    """The ``--mode`` option: one of the training modes, or a usage error."""
    if not _is_mode(text):
        raise typer.BadParameter(f"must be one of {', '.join(MODES)}", param_hint="--mode")
    return text


def _device(runtime: Runtime, override: str | None) -> str:
    return override or runtime.section(ModelsSection).device


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- weights -------------------------------------------------------------------------------------

@weights_app.command("list")
def weights_list(ctx: typer.Context, as_json: JsonFlag = False,
                 verify: Annotated[bool, typer.Option("--verify", help="check each file's sha256")] = False) -> None:
    """Show each architecture's expected weights file and whether it is in place."""
    folder = weights_dir(ctx.obj)
    rows = list_weights(default_registry(), folder, verify=verify)
    if as_json:
        _echo_json({"weights_dir": str(folder), "weights": [
            {"architecture": r.architecture, "file_name": r.file_name, "present": r.present,
             "path": str(r.path) if r.path else None, "size_bytes": r.size_bytes, "verified": r.verified}
            for r in rows]})
        return
    table = Table(title=f"weights in {folder}")
    for column in ("architecture", "file", "present", "size MB", "sha256 ok"):
        table.add_column(column)
    for r in rows:
        present = "yes" if r.present else ("-" if r.file_name is None else "MISSING")
        table.add_row(r.architecture, r.file_name or "(none: random init only)", present,
                      f"{r.size_bytes / 1e6:.0f}" if r.size_bytes else "",
                      {True: "yes", False: "NO", None: ""}[r.verified])
    Console().print(table)


@weights_app.command("import")
def weights_import(ctx: typer.Context, file: Annotated[Path, typer.Argument(help="a torchvision .pth file")],
                   arch: Annotated[str | None, typer.Option("--arch", help="the architecture it is for "
                                                            "(default: recognised by its sha256)")] = None) -> None:
    """Copy a checkpoint into the weights folder under torchvision's file name, after checking its hash."""
    spec, target = import_weights(file, default_registry(), weights_dir(ctx.obj), architecture=arch)
    typer.echo(f"{spec.name}: {target}")


# --- train ---------------------------------------------------------------------------------------

class _RichProgress(AbstractContextManager["_RichProgress"]):
    """Renders models/' (label, completed, total) progress callbacks as rich bars on stderr."""

    def __init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, label: str, completed: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=completed, total=total)


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _task_classes(task: str, classes: str | None) -> tuple[TaskDefinition | None, list[str]]:
    """The built-in task's definition (if any) and the class list: ``--classes``, else the task's."""
    definition = known_task(task)
    class_list = _split(classes) or (list(definition.classes) if definition else None)
    if class_list is None:
        raise typer.BadParameter(f"{task!r} is not a built-in task: give --classes", param_hint="--task")
    return definition, class_list


def _training_folder(data: Path, runtime: Runtime, *, size: int, recipe: str | None) -> CompositeFolder:
    """Prepared composites (composites.csv), or composites built from DICOM studies (labels.csv)."""
    if (data / "composites.csv").is_file():
        return load_composite_folder(data)
    if not (data / "labels.csv").is_file():
        raise typer.BadParameter("needs labels.csv (DICOM studies) or composites.csv (prepared composites)",
                                 param_hint="DATA")
    folder = load_study_folder(data, size=size, rules_path=runtime.section(GroupingSettings).rules,
                               channel_recipe=_split(recipe))
    if folder.provenance.get("skipped"):
        typer.secho(f"{len(folder.provenance['skipped'])} studies or lesions left out (see the log)",
                    err=True, fg="yellow")
    return folder


def _channel_recipe(recipe: str | None, folder: CompositeFolder, definition: TaskDefinition | None) -> list[str]:
    """R,G,B roles: ``--recipe``, else the folder's, else the task's."""
    channel_recipe = (_split(recipe) or folder.provenance.get("channel_recipe")
                      or (list(definition.channel_recipe) if definition else None))
    if not channel_recipe or len(channel_recipe) != 3:
        raise typer.BadParameter("give three roles (R,G,B)", param_hint="--recipe")
    return channel_recipe


def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="folder of DICOM studies with labels.csv, or of prepared "
                                         "composites with composites.csv", exists=True, file_okay=False)],
    task: Annotated[str, typer.Option("--task", help="ct-histology, mri-ehcc, or a new name with --classes")],
    arch: Annotated[str, typer.Option("--arch", help="architecture (see 'triphase weights list')")] = "vgg16",
    mode: Annotated[str, typer.Option("--mode", help="finetune | linear | svm")] = "finetune",
    folds: Annotated[int, typer.Option("--folds", min=2, help="patient-level CV folds")] = 5,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="maximum epochs per fit")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2)] = 32,
    learning_rate: Annotated[float | None, typer.Option("--lr", help="default 1e-4 fine-tuning, else 1e-3")] = None,
    patience: Annotated[int, typer.Option("--patience", min=1, help="early-stopping patience (epochs)")] = 5,
    input_size: Annotated[int | None, typer.Option("--input-size", help="default: the architecture's")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    classes: Annotated[str | None, typer.Option("--classes", help="comma-separated, for tasks not built in")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="R,G,B roles (default: the task's, or "
                                               "composites.json)")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="train from random weights (not the "
                                              "papers' method; recorded in the manifest)")] = False,
    augment: Annotated[bool, typer.Option("--augment/--no-augment")] = True,
    class_weighting: Annotated[bool, typer.Option("--class-weights/--no-class-weights")] = True,
    abstain_below: Annotated[float, typer.Option("--abstain-below", min=0.0, max=0.99,
                                                 help="calibrated probability below which the answer is "
                                                 "'indeterminate'")] = 0.0,
    target_coverage: Annotated[float | None, typer.Option(
        "--target-coverage", min=0.01, max=1.0,
        help="choose the abstention threshold on out-of-fold probabilities to answer this fraction, e.g. 0.9 "
             "(instead of --abstain-below)")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda[:N]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Cross-validate a model on prepared composites, fit it on all of them, and store the artifact."""
    runtime: Runtime = ctx.obj
    training_mode = parse_mode(mode)
    definition, class_list = _task_classes(task, classes)
    registry = default_registry()
    if arch not in registry:
        raise typer.BadParameter(f"unknown architecture; known: {', '.join(registry.names())}", param_hint="--arch")
    folder = _training_folder(data, runtime, size=input_size or registry.get(arch).input_size, recipe=recipe)
    channel_recipe = _channel_recipe(recipe, folder, definition)
    if target_coverage is not None and abstain_below:
        raise typer.BadParameter("give --target-coverage or --abstain-below, not both", param_hint="--target-coverage")
    if random_init:
        typer.secho("WARNING: --random-init: training from random weights, not ImageNet; the manifest says so.",
                    err=True, fg="yellow")
    config = TrainingConfig(architecture=arch, mode=training_mode, folds=folds, epochs=epochs,
                            batch_size=batch_size, learning_rate=learning_rate, patience=patience, seed=seed,
                            input_size=input_size, augmentation=Augmentation() if augment else NO_AUGMENTATION,
                            class_weighting=class_weighting, random_init=random_init,
                            device=_device(runtime, device), abstention_threshold=abstain_below,
                            target_coverage=target_coverage)
    with _RichProgress() as progress:
        trained = train_model(folder.images, folder.labels, folder.patient_ids, classes=class_list, config=config,
                              registry=registry, weights_dir=weights_dir(runtime), progress=progress,
                              study_uids=[row.get("study_uid", "") for row in folder.rows])
    artifact = _save(trained, runtime, data, folder, task=task, channel_recipe=channel_recipe)
    if as_json:
        _echo_json({**_summary(artifact), "cv": artifact.manifest["cv"]})
        return
    _print_training(trained, artifact)


def _save(trained: TrainedModel, runtime: Runtime, data: Path, folder: CompositeFolder, *, task: str,
          channel_recipe: list[str]) -> Artifact:
    """The immutable artifact, with how its composites were windowed (or that nobody said)."""
    windowing = folder.provenance.get("windowing") or {"source": f"prepared composites in {data.name}",
                                                       "note": "windowing done before training, not described"}
    return save_trained(trained, runtime.general.models_dir, task=task, channel_recipe=channel_recipe,
                        windowing=windowing)


def _print_training(trained: TrainedModel, artifact: Artifact) -> None:
    console = Console()
    cv = trained.cv
    console.print(f"[bold]model {artifact.hash[:12]}[/bold] {trained.spec.name} {trained.config.mode} "
                  f"-> {artifact.path}")
    for name, values in (("CV mean", cv["mean"]), ("majority baseline", cv["majority_baseline_mean"])):
        console.print(f"  {name:18s} accuracy {values['accuracy']:.3f}  balanced accuracy "
                      f"{values['balanced_accuracy']:.3f}  macro-F1 {values['macro_f1']:.3f}")
    if trained.weights_origin.kind == "random-init":
        console.print("  [yellow]trained from RANDOM INITIALISATION[/yellow]")


# --- models --------------------------------------------------------------------------------------

class ModelSummary(TypedDict):
    """One artifact in ``triphase models list --json`` (and ``train --json``, with its ``cv``)."""

    hash: str
    path: str
    task: str
    architecture: str
    mode: str
    classes: list[str]
    created_at: str
    weights_origin: str
    cv_mean: LabelSummary
    majority_baseline: LabelSummary


def _summary(artifact: Artifact) -> ModelSummary:
    m = artifact.manifest
    return {"hash": artifact.hash, "path": str(artifact.path), "task": m["task"], "architecture": m["architecture"],
            "mode": m["mode"], "classes": m["classes"], "created_at": m["created_at"],
            "weights_origin": m["weights_origin"]["kind"], "cv_mean": m["cv"]["mean"],
            "majority_baseline": m["cv"]["majority_baseline_mean"]}


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List the model artifacts in <data_dir>/models, newest first."""
    runtime: Runtime = ctx.obj
    artifacts = list_artifacts(runtime.general.models_dir)
    if as_json:
        _echo_json([_summary(a) for a in artifacts])
        return
    table = Table(title=f"models in {runtime.general.models_dir}")
    for column in ("hash", "task", "architecture", "mode", "weights", "CV macro-F1", "baseline", "created"):
        table.add_column(column)
    for a in artifacts:
        s = _summary(a)
        table.add_row(a.short_hash, s["task"], s["architecture"], s["mode"], s["weights_origin"],
                      f"{s['cv_mean']['macro_f1']:.3f}", f"{s['majority_baseline']['macro_f1']:.3f}", s["created_at"])
    Console().print(table)


@models_app.command("show")
def models_show(ctx: typer.Context, model: Annotated[str, typer.Argument(help="artifact folder or hash prefix")],
                as_json: JsonFlag = False) -> None:
    """Verify an artifact's hash and print its manifest."""
    runtime: Runtime = ctx.obj
    artifact = resolve_artifact(model, runtime.general.models_dir)
    if as_json:
        _echo_json({"hash": artifact.hash, "path": str(artifact.path), "manifest": artifact.manifest})
        return
    console = Console()
    console.print(f"[bold]model {artifact.hash}[/bold] (hash verified) at {artifact.path}")
    for warning in artifact.manifest.get("warnings", []):
        console.print(f"[yellow]{warning}[/yellow]")
    console.print(JSON(json.dumps(artifact.manifest)))


# --- predict -------------------------------------------------------------------------------------

class PredictionRow(TypedDict):
    """One image in ``triphase predict --json``."""

    image: str
    label: str
    top_class: str
    probabilities: dict[str, float]
    heatmap: str | None


def predict(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="artifact folder or hash prefix")],
    images: Annotated[list[Path], typer.Argument(help="composites (RGB PNG or HxWx3 .npy)", exists=True,
                                                 dir_okay=False)],
    tta: Annotated[bool, typer.Option("--tta", help="average over mirrored and rotated views")] = False,
    abstain_below: Annotated[float | None, typer.Option("--abstain-below", min=0.0, max=0.99,
                                                        help="default: the model's threshold")] = None,
    heatmap_dir: Annotated[Path | None, typer.Option("--heatmap-dir", help="write a heatmap PNG per image")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda[:N]")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Classify composites with a model artifact (a quick check; the worker does this per study)."""
    runtime: Runtime = ctx.obj
    artifact = resolve_artifact(model, runtime.general.models_dir)
    classifier = Classifier(artifact, registry=default_registry(), device=_device(runtime, device))
    arrays = [read_image(path) for path in images]
    predictions = classifier.predict(arrays, tta=tta, abstain_below=abstain_below, explain=heatmap_dir is not None)
    heatmaps = _write_heatmaps(heatmap_dir, images, predictions)
    rows: list[PredictionRow] = [
        {"image": str(path), "label": p.label, "top_class": p.top_class, "probabilities": p.probabilities,
         "heatmap": heatmap} for path, p, heatmap in zip(images, predictions, heatmaps, strict=True)]
    if as_json:
        _echo_json({"model": artifact.hash, "task": artifact.manifest["task"], "predictions": rows})
        return
    for row in rows:
        probs = "  ".join(f"{k} {v:.3f}" for k, v in row["probabilities"].items())
        typer.echo(f"{row['image']}: {row['label']}  ({probs})")


def _write_heatmaps(folder: Path | None, images: list[Path], predictions: list[Prediction]) -> list[str | None]:
    """One PNG per image with a heatmap, in ``folder``; the paths written (None where nothing was)."""
    if folder is None:
        return [None] * len(images)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[str | None] = []
    for image, prediction in zip(images, predictions, strict=True):
        if prediction.heatmap is None:
            written.append(None)
            continue
        target = folder / f"{image.stem}.heatmap.png"
        Image.fromarray((np.clip(prediction.heatmap, 0, 1) * 255).astype(np.uint8), mode="L").save(target)
        written.append(str(target))
    return written
