"""``triphase truth import``, ``reads import``, ``evaluate`` and ``experiment ...``."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from db.repository import Repository
from db.runtime import Runtime
from models.architectures import default_registry
from models.evaluation.bootstrap import DEFAULT_RESAMPLES
from models.evaluation.summary import BootstrapSettings
from models.training import TrainingConfig
from models.transforms import NO_AUGMENTATION, Augmentation
from worker.evaluation.experiments import (
    Design,
    architectures_experiment,
    load_data,
    misregistration_experiment,
    write_experiment,
)
from worker.evaluation.imports import ImportRejectedError, import_file
from worker.evaluation.render import write_report
from worker.evaluation.report import evaluate as run_evaluation
from worker.settings import ModelsSection
from worker.training.cli import parse_mode, weights_dir

log = logging.getLogger(__name__)

truth_app = typer.Typer(help="Ground truth (labels.csv).", no_args_is_help=True)
reads_app = typer.Typer(help="Readers' reads (reads.csv).", no_args_is_help=True)
experiment_app = typer.Typer(help="The papers' experiments on your data.", no_args_is_help=True)

TaskOption = Annotated[str | None, typer.Option("--task", help="restrict labels to this task's classes")]
ReplaceOption = Annotated[bool, typer.Option("--replace", help="replace rows already imported (same keys)")]


def _import(ctx: typer.Context, kind: str, file: Path, *, task: str | None, replace: bool,
            allow_unknown_studies: bool = False) -> None:
    runtime: Runtime = ctx.obj
    try:
        count = import_file(kind, file, Repository(runtime.database()), task=task, replace=replace,
                            allow_unknown_studies=allow_unknown_studies)
    except ImportRejectedError as exc:
        for error in exc.errors:
            typer.echo(f"{file}: {error}", err=True)
        typer.echo(f"triphase: {file}: {len(exc.errors)} problem(s); nothing imported", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"imported {count} row(s) from {file}")


@truth_app.command("import")
def truth_import(ctx: typer.Context, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                 task: TaskOption = None, replace: ReplaceOption = False,
                 allow_unknown_studies: Annotated[bool, typer.Option(
                     "--allow-unknown-studies", help="accept study UIDs not received (yet)")] = False) -> None:
    """Import ground truth: patient_id, study_uid, accession_number, lesion_id, label, source, ..."""
    _import(ctx, "truth", file, task=task, replace=replace, allow_unknown_studies=allow_unknown_studies)


@reads_app.command("import")
def reads_import(ctx: typer.Context, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                 task: TaskOption = None, replace: ReplaceOption = False) -> None:
    """Import readers' reads: reader_id, reader_group, patient_id, study_uid, lesion_id, label, confidence."""
    _import(ctx, "reads", file, task=task, replace=replace)


def _when(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("an ISO date or date-time, e.g. 2026-01-31", param_hint=option) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _settings(resamples: int, seed: int) -> BootstrapSettings:

    if resamples < 10:
        raise typer.BadParameter("at least 10", param_hint="--resamples")
    return BootstrapSettings(n_resamples=resamples, seed=seed)


ResamplesOption = Annotated[int, typer.Option("--resamples", help="bootstrap resamples (over patients)")]
SeedOption = Annotated[int, typer.Option("--seed", help="bootstrap and training seed")]


def evaluate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="folder for report.html, report.json, metrics.csv")],
    model: Annotated[str | None, typer.Option("--model", help="model version (hash prefix)")] = None,
    task: Annotated[str | None, typer.Option("--task", help="only this task")] = None,
    since: Annotated[str | None, typer.Option("--since", help="predictions made on or after (ISO, UTC)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="predictions made before (ISO, UTC)")] = None,
    readers: Annotated[bool, typer.Option("--readers/--no-readers", help="compare with readers' reads")] = True,
    resamples: ResamplesOption = DEFAULT_RESAMPLES,
    seed: SeedOption = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print report.json on stdout")] = False,
    include_training: Annotated[bool, typer.Option(
        "--include-training", help="also score lesions of the model's own training patients (resubstitution; "
                                   "the report is marked so)")] = False,
) -> None:
    """Metrics of the stored predictions against the ground truth, with 95% CIs, baseline and readers.

    Lesions of the model's own training patients are left out (and counted) unless --include-training."""
    runtime: Runtime = ctx.obj
    document = run_evaluation(runtime.database(), model=model, task=task, since=_when(since, "--since"),
                              until=_when(until, "--until"), readers=readers, settings=_settings(resamples, seed),
                              models_dir=runtime.general.models_dir, include_training=include_training)
    paths = write_report(document, out)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    if document.get("resubstitution"):
        typer.secho("RESUBSTITUTION: lesions of the models' own training patients are included", err=True,
                    fg="yellow")
    elif document.get("excluded_training_lesions"):
        typer.echo(f"{document.get('excluded_training_lesions')} lesion(s) of the models' training patients "
                   "left out", err=True)
    for section in document["models"]:
        summary = section["summary"]
        if summary is None:
            typer.echo(f"{section['model'][:12]} {section['task']}: no prediction joined to the ground truth")
            continue
        accuracy = summary["metrics"]["accuracy"]
        typer.echo(f"{section['model'][:12]} {section['task']}: {summary['lesions']} lesions, "
                   f"{summary['patients']} patients, accuracy {accuracy['estimate']:.3f} "
                   f"[{accuracy['low']:.3f}, {accuracy['high']:.3f}]")
    if not document["models"]:
        typer.echo("no predictions match the filters", err=True)
    typer.echo(f"report: {paths['html']}")


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("comma-separated numbers, e.g. 0,2,4", param_hint=option) from None


def _config(runtime: Runtime, *, arch: str, mode: str, inner_folds: int, epochs: int, size: int | None,
            random_init: bool, device: str | None, recipe: RecipeOptions) -> TrainingConfig:
    """The recipe of ``triphase train`` (its defaults and its options), with the experiment's architecture."""

    return TrainingConfig(architecture=arch, mode=parse_mode(mode), folds=inner_folds, epochs=epochs,
                          input_size=size, random_init=random_init,
                          augmentation=Augmentation() if recipe.augment else NO_AUGMENTATION,
                          device=device or runtime.section(ModelsSection).device, batch_size=recipe.batch_size,
                          patience=recipe.patience, learning_rate=recipe.learning_rate)


def _design(runtime: Runtime, config: TrainingConfig, *, folds: int, seeds: str, resamples: int, seed: int) -> Design:

    chosen = tuple(int(v) for v in _floats(seeds, "--seeds"))
    if not chosen:
        raise typer.BadParameter("at least one seed", param_hint="--seeds")
    return Design(config, folds, chosen, weights_dir(runtime), _settings(resamples, seed))


@dataclass(frozen=True)
class RecipeOptions:
    batch_size: int
    patience: int
    learning_rate: float | None
    augment: bool


DataArgument = Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                              help="studies with labels.csv, or composites.csv")]
OutOption = Annotated[Path, typer.Option("--out", help="folder for results.json, table.csv, plot.png")]
FoldsOption = Annotated[int, typer.Option("--folds", help="outer patient-level folds")]
InnerOption = Annotated[int, typer.Option("--inner-folds", help="each training run's own CV folds")]
EpochsOption = Annotated[int, typer.Option("--epochs")]
SizeOption = Annotated[int | None, typer.Option("--input-size",
                                                help="network input size (default: the architecture's)")]
TaskExperimentOption = Annotated[str | None, typer.Option("--task", help="class list of this task")]
RandomInitOption = Annotated[bool, typer.Option("--random-init", help="random weights instead of ImageNet (tests)")]
DeviceOption = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda[:N]")]
SeedsOption = Annotated[str, typer.Option("--seeds", help="training and fold seeds, each a repetition")]
BatchOption = Annotated[int, typer.Option("--batch-size", min=2, help="as train")]
PatienceOption = Annotated[int, typer.Option("--patience", min=1, help="as train")]
RateOption = Annotated[float | None, typer.Option("--lr", help="as train")]
AugmentOption = Annotated[bool, typer.Option("--augment/--no-augment", help="as train")]


@experiment_app.command("misregistration")
def experiment_misregistration(
    ctx: typer.Context, data: DataArgument, out: OutOption,
    arch: Annotated[str, typer.Option("--arch")] = "vgg16",
    mode: Annotated[str, typer.Option("--mode", help="finetune | linear | svm")] = "finetune",
    shift: Annotated[str, typer.Option("--shift", help="shifts in mm on the patient grid, e.g. 0,2,4,8")] = "0,2,4,8",
    rotate: Annotated[str, typer.Option("--rotate", help="rotations in degrees")] = "0,2,5,10",
    skew: Annotated[str, typer.Option("--skew", help="skews in degrees")] = "0,2,5,10",
    channel: Annotated[int, typer.Option("--channel", help="the channel moved (0=R, 1=G, 2=B)")] = 0,
    unregistered: Annotated[bool, typer.Option("--no-register/--registered-only",
                                               help="add the unregistered arm (the paper's question)")] = True,
    folds: FoldsOption = 5, inner_folds: InnerOption = 3, epochs: EpochsOption = 30, task: TaskExperimentOption = None,
    input_size: SizeOption = None, random_init: RandomInitOption = False, device: DeviceOption = None,
    resamples: ResamplesOption = DEFAULT_RESAMPLES, seed: SeedOption = 0, seeds: SeedsOption = "0,1,2",
    batch_size: BatchOption = 32, patience: PatienceOption = 5, learning_rate: RateOption = None,
    augment: AugmentOption = True,
) -> None:
    """Train and evaluate registered, unregistered and deliberately misregistered composites."""

    runtime: Runtime = ctx.obj
    degrees = {name: _floats(text, f"--{name}") for name, text in
               (("shift", shift), ("rotate", rotate), ("skew", skew)) if text.strip()}
    if channel not in (0, 1, 2):
        raise typer.BadParameter("0, 1 or 2", param_hint="--channel")
    config = _config(runtime, arch=arch, mode=mode, inner_folds=inner_folds, epochs=epochs, size=input_size,
                     random_init=random_init, device=device,
                     recipe=RecipeOptions(batch_size, patience, learning_rate, augment))
    size = input_size or default_registry().get(arch).input_size
    result = misregistration_experiment(load_data(data, size=size, task=task), degrees=degrees, channel=channel,
                                        design=_design(runtime, config, folds=folds, seeds=seeds,
                                                       resamples=resamples, seed=seed), unregistered=unregistered)
    paths = write_experiment(result, out)
    for row in result["rows"]:
        versus = row.get("accuracy_difference")
        holm = row.get("accuracy_p_holm")
        tail = "" if versus is None else f" (vs {result['reference']} {versus:+.3f}, Holm p {holm})"
        typer.echo(f"{row['arm']:>14}: accuracy {row['accuracy']:.3f}{tail}")
    typer.echo(f"report: {paths['html']}")


@experiment_app.command("architectures")
def experiment_architectures(
    ctx: typer.Context, data: DataArgument, out: OutOption,
    archs: Annotated[str, typer.Option("--archs", help="comma-separated; ARCH:svm for the SVM variant")] =
    "alexnet,vgg16,vgg19,googlenet,inception_v3,resnet50,resnet101,vgg16:svm",
    reference: Annotated[str | None, typer.Option("--reference", help="ARCH[:mode] the others are compared "
                                                  "with (default: the first)")] = None,
    folds: FoldsOption = 5, inner_folds: InnerOption = 3, epochs: EpochsOption = 30, task: TaskExperimentOption = None,
    input_size: SizeOption = None, random_init: RandomInitOption = False, device: DeviceOption = None,
    resamples: ResamplesOption = DEFAULT_RESAMPLES, seed: SeedOption = 0, seeds: SeedsOption = "0,1,2",
    batch_size: BatchOption = 32, patience: PatienceOption = 5, learning_rate: RateOption = None,
    augment: AugmentOption = True,
) -> None:
    """Several CNNs (and the SVM variant) under the same patient-level folds, each against a reference."""

    runtime: Runtime = ctx.obj
    registry = default_registry()
    variants = []
    for part in (p.strip() for p in archs.split(",") if p.strip()):
        name, _, mode = part.partition(":")
        if name not in registry:
            raise typer.BadParameter(f"unknown architecture {name!r}; known: {', '.join(registry.names())}",
                                     param_hint="--archs")
        variants.append((name, mode or "finetune"))
    if not variants:
        raise typer.BadParameter("name at least one architecture", param_hint="--archs")
    name, _, mode = (reference or "").partition(":")
    wanted = (name, mode or "finetune") if reference else variants[0]
    if wanted not in variants:
        raise typer.BadParameter("must be one of --archs", param_hint="--reference")
    config = _config(runtime, arch=variants[0][0], mode=variants[0][1], inner_folds=inner_folds, epochs=epochs,
                     size=input_size, random_init=random_init, device=device,
                     recipe=RecipeOptions(batch_size, patience, learning_rate, augment))
    size = input_size or max(registry.get(name).input_size for name, _ in variants)
    result = architectures_experiment(load_data(data, size=size, task=task), variants=variants,
                                      design=_design(runtime, config, folds=folds, seeds=seeds, resamples=resamples,
                                                     seed=seed), reference=variants.index(wanted))
    paths = write_experiment(result, out)
    for row in result["rows"]:
        typer.echo(f"{row['arm']:>20}: accuracy {row['accuracy']:.3f} "
                   f"[{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]")
    typer.echo(f"report: {paths['html']}")
