"""Wilson intervals and the drift flag of the accuracy trend."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.web.drift import Case, periods, wilson

START = dt.datetime(2025, 1, 6, 9, tzinfo=dt.UTC)  # a Monday


def test_wilson_matches_the_textbook_values() -> None:
    interval = wilson(81, 263)  # Newcombe (1998) example: 0.2553 to 0.3662
    assert interval.low == pytest.approx(0.2553, abs=5e-4)
    assert interval.high == pytest.approx(0.3662, abs=5e-4)
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == pytest.approx(1.0)
    assert wilson(0, 0).low == 0.0 and wilson(0, 0).high == 1.0


def _week(offset: int, correct: int, wrong: int) -> list[Case]:
    at = START + dt.timedelta(weeks=offset)
    return [Case(at, True, False)] * correct + [Case(at, False, False)] * wrong


def test_a_week_below_the_first_weeks_lower_bound_is_a_drop() -> None:
    trend = periods(_week(0, 45, 5) + _week(1, 44, 6) + _week(2, 30, 20))
    assert [p.label for p in trend] == ["2025-W02", "2025-W03", "2025-W04"]
    assert [p.drop for p in trend] == [False, False, True]


def test_periods_of_n_cases() -> None:
    trend = periods(_week(0, 10, 0) + _week(1, 2, 8), per_cases=10)
    assert [(p.label, p.cases, p.correct) for p in trend] == [("cases 1-10", 10, 10), ("cases 11-20", 10, 2)]
    assert trend[1].drop
