"""Helpers of the synth tests: small options, reading studies back, the dciodvfy tool."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from worker.synth.context import StudyOptions

SMALL_CT = dict(slices=12, matrix=64)
SMALL_MR = dict(slices=8, matrix=48)


def small_options(task: str, **overrides: object) -> StudyOptions:
    size = SMALL_CT if task == "ct-histology" else SMALL_MR
    values = dict(task=task, seed=11, difficulty=0.5, **size) | overrides
    return StudyOptions(**values)  # type: ignore[arg-type]


def read_study(folder: Path) -> dict[str, list[pydicom.Dataset]]:
    """Every file of a study folder, by SeriesInstanceUID."""
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        series[ds.SeriesInstanceUID].append(ds)
    return series


def hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def require_dciodvfy() -> str:
    """dciodvfy's path; a missing tool fails the run in CI (CI=true) and skips it elsewhere."""
    found = shutil.which("dciodvfy")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("dciodvfy (Debian dicom3tools) is not installed")
    pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
