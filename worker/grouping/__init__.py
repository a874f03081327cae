"""Phase and sequence identification: which series of a study plays which role."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from worker.grouping.matching import Grouping, Outcome, RoleMatch, group_study
from worker.grouping.rules import Rules, RulesError, load_rules
from worker.grouping.series_info import SeriesInfo, scan_studies

__all__ = ["Grouping", "Outcome", "RoleMatch", "Rules", "RulesError", "SeriesInfo", "group_paths", "load_rules"]


def group_paths(paths: Iterable[Path], rules: Rules, task: str | None = None) -> dict[str, Grouping]:
    """Group every study found under ``paths`` (files or folders)."""
    scan = scan_studies(paths)
    return {uid: group_study(uid, series, rules, task) for uid, series in sorted(scan.series.items())}
