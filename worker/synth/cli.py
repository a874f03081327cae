"""``triphase synth``: write synthetic studies with ground truth and simulated readers' reads."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from worker.synth.context import StudyOptions
from worker.synth.multiframe import convert_study
from worker.synth.run import generate_run
from worker.synth.study import StudyRecord
from worker.synth.tasks import parse_difficulty
from worker.synth.truth import DEFAULT_READERS, parse_readers


class Task(StrEnum):
    ct = "ct-histology"
    mri = "mri-ehcc"


class Style(StrEnum):
    ge = "ge"
    siemens = "siemens"
    canon = "canon"
    japanese = "japanese"
    mixed = "mixed"


def synth(
    out_dir: Annotated[Path, typer.Argument(help="folder to write (one sub-folder per study)")],
    task: Annotated[Task, typer.Option("--task", help="which examination and classes")],
    studies: Annotated[int, typer.Option("--studies", min=1, help="number of studies")] = 10,
    seed: Annotated[int, typer.Option("--seed", min=0, help="same seed, same files")] = 0,
    difficulty: Annotated[str, typer.Option(
        "--difficulty", help="class overlap: easy, medium, hard or a number in [0, 1]")] = "medium",
    style: Annotated[Style, typer.Option("--style", help="vendor or site conventions; mixed: one per study")
                     ] = Style.mixed,
    balanced: Annotated[bool, typer.Option("--balanced", help="equal classes instead of the paper's mix")] = False,
    slices: Annotated[int, typer.Option("--slices", min=4, max=400, help="images per series (200 mm coverage)")
                      ] = 40,
    matrix: Annotated[int, typer.Option("--matrix", min=16, max=1024, help="rows and columns per image")] = 256,
    motion: Annotated[float, typer.Option("--motion", min=0.0, max=30.0,
                                          help="largest breath-hold offset of the liver (mm)")] = 10.0,
    max_lesions: Annotated[int, typer.Option("--max-lesions", min=1, max=5, help="lesions per study, at most")
                           ] = 1,
    single_series: Annotated[bool | None, typer.Option(
        "--single-series/--separate-series",
        help="dynamic phases in one series split by AcquisitionNumber (default: the style's habit)")] = None,
    extras: Annotated[bool, typer.Option("--extras/--no-extras",
                                         help="localizer, reformat, ADC map and dose screen series")] = True,
    multiframe: Annotated[bool, typer.Option(
        "--multiframe", help="turn each CT/MR series into one Legacy Converted Enhanced instance (highdicom)")
                          ] = False,
    readers: Annotated[str | None, typer.Option(
        "--readers", help="simulated readers group:count:accuracy[,...] (default: the paper's figures; "
                          "'' for none)")] = None,
) -> None:
    """Write synthetic multi-phase liver studies (DICOM + SEG) with labels.csv and reads.csv.

    Every patient is fictitious (SYNTH^PATIENTnnnn) and every file is the same for the same seed
    and options.
    """
    try:
        groups = parse_readers(DEFAULT_READERS[task.value] if readers is None else readers)
        level = parse_difficulty(difficulty)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    options = StudyOptions(task=task.value, seed=seed, difficulty=level, slices=slices,
                           matrix=matrix, motion_mm=motion, extras=extras, single_series=single_series,
                           style=style.value, balanced=balanced, max_lesions=max_lesions)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("highdicom").setLevel(logging.WARNING)  # it logs every module it copies
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True, disable=studies < 2) as progress:
        bar = progress.add_task("studies", total=studies)
        def done(record: StudyRecord) -> None:
            if multiframe:
                convert_study(record.folder)
            progress.advance(bar)

        summary = generate_run(out_dir, options, studies, groups, on_study=done)
    counts = ", ".join(f"{k} {v}" for k, v in summary.label_counts.items())
    typer.echo(f"{summary.studies} studies, {summary.files} files, {summary.lesions} lesions ({counts}) "
               f"in {out_dir}")
