"""What every part of one study's generation shares: its options, random stream, UIDs, truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.synth.anatomy import Lesion
from worker.synth.dicom_writer import StudyHeader, make_uid
from worker.synth.vendors import VendorStyle

COVERAGE_MM = 200.0
"""Craniocaudal coverage of an axial series: the liver from dome to tip."""
SCAN_TOP_Z = 140.0


@dataclass(frozen=True)
class StudyOptions:
    """The options of one run that shape every study."""

    task: str
    seed: int
    difficulty: float
    slices: int = 40
    matrix: int = 256
    motion_mm: float = 10.0
    extras: bool = True
    single_series: bool | None = None
    """None: the style's own habit (Canon-like styles store the dynamic phases in one series)."""
    style: str = "mixed"
    balanced: bool = False
    max_lesions: int = 1

    def fingerprint(self) -> str:
        """Everything that changes pixels, so different options never reuse a UID."""
        return (f"{self.task}|{self.seed}|{self.difficulty:.4f}|{self.slices}|{self.matrix}|"
                f"{self.motion_mm:.3f}|{self.extras}|{self.single_series}|{self.style}|{self.balanced}|"
                f"{self.max_lesions}")


@dataclass
class StudyContext:
    """One study being generated (mutable only through its random generator)."""

    options: StudyOptions
    index: int
    style: VendorStyle
    header: StudyHeader
    lesions: list[Lesion]
    rng: np.random.Generator
    start_s: float
    """Seconds of the day when the examination starts."""

    def uid(self, *parts: object) -> str:
        return make_uid(self.options.fingerprint(), self.index, *parts)

    @property
    def single_series(self) -> bool:
        if self.options.single_series is None:
            return self.style.single_series
        return self.options.single_series

    def slice_spacing(self) -> float:
        return round(COVERAGE_MM / self.options.slices, 3)
