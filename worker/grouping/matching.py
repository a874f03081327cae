"""Assign series to roles: score every (role, series) pair, then choose the best consistent set.

One study goes through four stages: series that cannot carry any role are excluded and series
holding several phases split; the rest are gathered into candidate acquisitions; candidates are
assigned to roles (:mod:`worker.grouping.assignment`, from the scores of
:mod:`worker.grouping.signals`) under every plausible injection time, the most coherent reading
winning; and the choice is explained: each role's reasons, why every other series was left out,
and the problems that make the study incomplete or ambiguous.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from worker.grouping.assignment import (
    Assignment,
    Candidate,
    Scoring,
    ambiguities,
    best_timed,
    best_untimed,
    candidates_from,
    injection_hypotheses,
)
from worker.grouping.image_check import peak_enhancement
from worker.grouping.rules import Rules, TaskRules
from worker.grouping.series_info import SeriesInfo
from worker.grouping.splitting import split_phases


class Outcome(StrEnum):
    OK = "ok"
    INCOMPLETE = "incomplete"
    AMBIGUOUS = "ambiguous"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class RoleMatch:
    series: SeriesInfo
    score: float
    reasons: tuple[str, ...]


@dataclass
class Grouping:
    """The result for one study: the task, the outcome, each role's series and every exclusion."""

    study_uid: str
    task: str | None
    outcome: Outcome
    roles: dict[str, RoleMatch | None]
    excluded: dict[str, str]
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "task": self.task,
            "outcome": self.outcome.value,
            "roles": {
                role: None if m is None else {
                    "series": m.series.series_uid, "acquisition_number": m.series.acquisition_number,
                    "score": round(m.score, 2), "reasons": list(m.reasons)}
                for role, m in self.roles.items()
            },
            "excluded": dict(self.excluded),
            "problems": list(self.problems),
        }


# --- exclusion ----------------------------------------------------------------------------------

def exclusion_reason(series: SeriesInfo, rules: Rules, modalities: set[str]) -> str | None:
    """Why a series cannot carry any role, or None."""
    if not series.is_image_series:
        return f"not an image series ({series.modality or 'no modality'}, SOP class {series.sop_class_uid})"
    if series.modality not in modalities:
        return f"modality {series.modality} is not analysed"
    hits = [t for t in rules.exclude.image_type if t in series.image_type]
    if hits:
        return f"image type {'/'.join(hits)} (derived, localizer, reformat or map)"
    for pattern in rules.exclude.description:
        if re.search(pattern, series.text, re.IGNORECASE):
            return f"description {series.description!r} marks a non-diagnostic series ({pattern})"
    plane = series.plane
    if plane != "axial":
        return f"not axial ({plane} orientation)" if plane != "mixed" else "mixed orientations (localizer?)"
    if len(series.images) < rules.exclude.min_images:
        return f"too few images ({len(series.images)})"
    return None


def choose_task(series: Sequence[SeriesInfo], rules: Rules) -> str | None:
    """The task whose modality has the most image series in the study, if any."""
    counts = {name: sum(1 for s in series if s.modality == t.modality and s.is_image_series)
              for name, t in rules.task.items()}
    name, count = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
    return name if count else None


# --- the stages of one study --------------------------------------------------------------------

@dataclass
class _Usable:
    """What is left to match once exclusions are made and multi-phase series split."""

    series: list[SeriesInfo] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Chosen:
    """The winning reading of the study: its assignment and the injection time it assumed."""

    assignment: Assignment
    injection_s: float | None
    injection_from_headers: bool
    scoring: Scoring


def _exclude_and_split(series: Sequence[SeriesInfo], rules: Rules, task: TaskRules) -> _Usable:
    usable = _Usable()
    for s in series:
        reason = exclusion_reason(s, rules, {task.modality})
        if reason:
            usable.excluded[s.series_uid] = reason
            continue
        parts, split_note = split_phases(s)
        if split_note:
            usable.notes.append(f"{s.description!r}: {split_note}")
        usable.series.extend(parts)
    return usable


def _enhancement(cands: list[Candidate], task: TaskRules) -> dict[int, float]:
    if not any(task.role[r].image_check for r in task.roles):
        return {}
    return peak_enhancement([c.series for c in cands if c.series.modality == "CT"])


def _assign(cands: list[Candidate], task: TaskRules, rules: Rules) -> _Chosen:
    """Try every injection-time hypothesis; keep the one with the highest total score."""
    untimed = [r for r in task.roles if r not in task.timed]
    enhancement = _enhancement(cands, task)
    hypotheses, from_headers = injection_hypotheses(cands, task)
    best_total = -math.inf
    chosen = _Chosen({}, None, from_headers, Scoring(task, rules, None, enhancement))
    for injection in hypotheses:
        scoring = Scoring(task, rules, injection, enhancement)
        timed_total, timed_assignment = best_timed(cands, scoring)
        rest = [c for c in cands if all(c is not pick.candidate for pick in timed_assignment.values())]
        untimed_total, untimed_assignment = best_untimed(rest, untimed, Scoring(task, rules, injection))
        total = timed_total + untimed_total
        if total > best_total:
            best_total = total
            chosen = _Chosen({**timed_assignment, **untimed_assignment}, injection, from_headers, scoring)
    return chosen


def _role_matches(chosen: _Chosen, task: TaskRules) -> dict[str, RoleMatch | None]:
    """Each role's match, its reasons completed with what holds for the whole reading."""
    roles: dict[str, RoleMatch | None] = {}
    estimated = chosen.injection_s is not None and not chosen.injection_from_headers
    for role in task.roles:
        pick = chosen.assignment.get(role)
        if pick is None:
            roles[role] = None
            continue
        reasons = list(pick.reasons)
        if estimated and role in task.timed:
            reasons.append("injection time estimated from the acquisition times (no ContrastBolusStartTime)")
        if pick.candidate.others:
            reasons.append(f"preferred over {len(pick.candidate.others)} other reconstruction(s) "
                           "of the same acquisition")
        if role in task.timed and pick.candidate.time is None:
            reasons.append("no acquisition times in the headers: series numbers taken as the order of acquisition")
        roles[role] = RoleMatch(pick.candidate.series, pick.score, tuple(reasons))
    return roles


def _unused(cands: list[Candidate], roles: dict[str, RoleMatch | None], excluded: dict[str, str]) -> None:
    """Record why every series that carries no role was left out."""
    used_series = {m.series.series_uid for m in roles.values() if m is not None}
    for cand in cands:
        chosen = any(m is not None and m.series is cand.series for m in roles.values())
        for s in ([] if chosen else [cand.series]) + cand.others:
            if s.series_uid not in used_series:
                excluded.setdefault(s.series_uid, "another reconstruction of the same acquisition was preferred"
                                    if chosen else "no role matched this series")


def _outcome(roles: dict[str, RoleMatch | None], task: TaskRules, ambiguous: list[str],
             problems: list[str]) -> Outcome:
    """The study's outcome; the problems that explain it are added to ``problems``."""
    missing = [r for r in task.required if roles.get(r) is None]
    frames = {m.series.frame_of_reference for m in roles.values() if m is not None}
    if len(frames - {None}) > 1:
        problems.append("the chosen series do not share one frame of reference")
    if missing:
        problems.append(f"required role(s) not found: {', '.join(missing)}")
        return Outcome.INCOMPLETE
    if ambiguous:
        problems.extend(ambiguous)
        return Outcome.AMBIGUOUS
    return Outcome.OK


def group_study(study_uid: str, series: Sequence[SeriesInfo], rules: Rules, task_name: str | None = None) -> Grouping:
    """Identify the roles of one study's series under ``rules``: exclude and split, gather the
    candidate acquisitions, assign them to roles, then explain the choice."""
    task_name = task_name or choose_task(series, rules)
    if task_name is None or task_name not in rules.task:
        excluded = {s.series_uid: "no analysis task for this modality" for s in series}
        return Grouping(study_uid, None, Outcome.NOT_APPLICABLE, {}, excluded,
                        ["no CT or MR image series that a task applies to"])
    task = rules.task[task_name]
    usable = _exclude_and_split(series, rules, task)
    cands = candidates_from(usable.series, rules)
    chosen = _assign(cands, task, rules)
    roles = _role_matches(chosen, task)
    _unused(cands, roles, usable.excluded)
    problems = list(usable.notes)
    outcome = _outcome(roles, task, ambiguities(chosen.assignment, cands, chosen.scoring), problems)
    return Grouping(study_uid, task_name, outcome, roles, usable.excluded, problems)
