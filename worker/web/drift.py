"""Accuracy of each model version over time, from the audit trail joined with the ground truth.

A prediction counts when its lesion has a truth label (joined by study UID and lesion id, as the
evaluation joins them); a lesion predicted again counts once, with its latest prediction. An
``indeterminate`` answer (the model abstained) counts as not correct: what the console tracks is
how often the answer sent to the PACS was right. The first period is the reference: a later
period whose accuracy falls below the lower bound of the first period's Wilson interval is
flagged as a drop, because a model's performance on the site's cases is what drifts when scanners,
protocols or the case mix change.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from db.queries import PredictionRow

Z_95 = 1.959963984540054
INDETERMINATE = "indeterminate"


@dataclass(frozen=True)
class Wilson:
    """A proportion with its Wilson score interval (sound for small n and for 0 or 1)."""

    estimate: float
    low: float
    high: float


def wilson(successes: int, n: int, z: float = Z_95) -> Wilson:
    """The Wilson score interval of ``successes`` out of ``n``; (0, 0, 1) when there are no trials."""
    if n <= 0:
        return Wilson(0.0, 0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Wilson(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Case:
    """One predicted lesion with a truth label."""

    at: dt.datetime
    correct: bool
    indeterminate: bool


@dataclass(frozen=True)
class Period:
    label: str
    cases: int
    correct: int
    indeterminate: int
    accuracy: Wilson
    drop: bool


@dataclass(frozen=True)
class AccuracyTrend:
    """One model version's accuracy per period on one task."""

    model: str
    task: str
    periods: list[Period]

    @property
    def drifted(self) -> bool:
        return any(period.drop for period in self.periods)

    @property
    def cases(self) -> int:
        return sum(period.cases for period in self.periods)


def labelled_cases(predictions: Iterable[PredictionRow],
                   truth: dict[tuple[str, str], str]) -> dict[tuple[str, str], list[Case]]:
    """(model, task) -> its latest prediction of each lesion that has a truth label, oldest first."""
    latest: dict[tuple[str, str, str, str], PredictionRow] = {}
    for row in predictions:  # ordered by id: the last prediction of a lesion wins
        latest[(row.model, row.task, row.study_uid, row.lesion_id)] = row
    grouped: dict[tuple[str, str], list[Case]] = {}
    for (model, task, study_uid, lesion_id), row in latest.items():
        label = truth.get((study_uid, lesion_id))
        if label is None:
            continue
        grouped.setdefault((model, task), []).append(
            Case(row.created_at, row.label == label, row.label == INDETERMINATE))
    return {key: sorted(cases, key=lambda c: c.at) for key, cases in grouped.items()}


def _week_label(at: dt.datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def _chunks(cases: Sequence[Case], per_cases: int | None) -> list[tuple[str, list[Case]]]:
    """Consecutive groups of cases: one per ISO week, or ``per_cases`` at a time."""
    if per_cases:
        return [(f"cases {start + 1}-{min(start + per_cases, len(cases))}", list(cases[start:start + per_cases]))
                for start in range(0, len(cases), per_cases)]
    weeks: dict[str, list[Case]] = {}
    for case in cases:
        weeks.setdefault(_week_label(case.at), []).append(case)
    return list(weeks.items())


def periods(cases: Sequence[Case], per_cases: int | None = None) -> list[Period]:
    """Accuracy per period; a period below the first period's Wilson lower bound is a drop."""
    out: list[Period] = []
    reference: Wilson | None = None
    for label, chunk in _chunks(cases, per_cases):
        correct = sum(c.correct for c in chunk)
        interval = wilson(correct, len(chunk))
        drop = reference is not None and interval.estimate < reference.low
        out.append(Period(label, len(chunk), correct, sum(c.indeterminate for c in chunk), interval, drop))
        reference = reference or interval
    return out


def accuracy_trends(predictions: Iterable[PredictionRow], truth: dict[tuple[str, str], str], *,
                    per_cases: int | None = None) -> list[AccuracyTrend]:
    """One trend per (model, task) with at least one labelled case."""
    return [AccuracyTrend(model, task, periods(cases, per_cases))
            for (model, task), cases in sorted(labelled_cases(predictions, truth).items())]
