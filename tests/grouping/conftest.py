"""Synthetic studies for grouping tests, generated once per session, plus header mutators."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

STYLES = ("ge", "siemens", "canon", "japanese")


@pytest.fixture(scope="session")
def synth_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``synth_run(task, style)``: a folder of 2 small studies with motion.csv (role truth)."""
    cache: dict[tuple[str, str], Path] = {}

    def make(task: str, style: str) -> Path:
        if (task, style) not in cache:
            out = tmp_path_factory.mktemp(f"{task}-{style}")
            slices = 8 if task == "ct-histology" else 6
            generate_run(out, StudyOptions(task=task, seed=3, difficulty=0.3, style=style, slices=slices, matrix=32),
                         2, [])
            cache[(task, style)] = out
        return cache[(task, style)]

    return make


def role_truth(run: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """study UID -> role -> (series UID, acquisition number) from the generator's motion.csv."""
    truth: dict[str, dict[str, tuple[str, str]]] = {}
    with (run / "motion.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["role"]:
                truth.setdefault(row["study_uid"], {})[row["role"]] = (row["series_uid"], row["acquisition_number"])
    return truth


def copy_study(run: Path, target: Path, index: int = 0) -> Path:
    source = sorted(run.glob("study-*"))[index]
    shutil.copytree(source, target)
    return target


def rewrite(folder: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    """Apply ``change`` to every file of a study folder, in place."""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


@pytest.fixture(scope="session")
def multiframe_run(synth_run: Callable[[str, str], Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    """``multiframe_run(task, style)``: the studies of ``synth_run`` with every classic CT/MR series
    turned into one Legacy Converted Enhanced instance by highdicom's converters (same series UIDs)."""
    from worker.synth.multiframe import convert_study

    cache: dict[tuple[str, str], Path] = {}

    def make(task: str, style: str) -> Path:
        if (task, style) not in cache:
            out = tmp_path_factory.mktemp(f"mf-{task}-{style}") / "run"
            shutil.copytree(synth_run(task, style), out)
            for study in sorted(out.glob("study-*")):
                convert_study(study)
            cache[(task, style)] = out
        return cache[(task, style)]

    return make
