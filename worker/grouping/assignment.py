"""Choose the best consistent set of (role, acquisition) pairs from the signal scores.

Reconstructions of the same acquisition (thin and thick slices) are one :class:`Candidate`,
represented by the preferred one. Timed roles (contrast phases) must follow each other in
acquisition order, so they are assigned by dynamic programming over time; the roles told apart by
physics (MR sequences) need distinct series and are assigned by maximum-weight matching. When the
injection time is not in the headers, every plausible injection time is tried by the caller.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from worker.grouping.rules import Rules, TaskRules
from worker.grouping.series_info import SeriesInfo
from worker.grouping.signals import Pairing, RoleScore, Veto, score_role

SAME_ACQUISITION_S = 2.0
NOMINAL_ARTERIAL_DELAY_S = 30.0  # where the arterial phase sits after injection, for estimating it
UNMATCHABLE = -1e6  # the matching's weight of a vetoed or too weak pair


@dataclass
class Candidate:
    """One acquisition: the preferred reconstruction and the others of the same acquisition."""

    series: SeriesInfo
    others: list[SeriesInfo]

    @property
    def time(self) -> float | None:
        return self.series.acquisition_seconds


@dataclass(frozen=True)
class Pick:
    """A role's chosen acquisition with its score and reasons."""

    candidate: Candidate
    score: float
    reasons: tuple[str, ...]


Assignment = dict[str, Pick]


@dataclass(frozen=True)
class Scoring:
    """Scores (role, candidate) pairs of one task under one injection-time hypothesis."""

    task: TaskRules
    rules: Rules
    injection_s: float | None
    enhancement: Mapping[int, float] | None = None

    def __call__(self, role: str, candidate: Candidate) -> RoleScore | Veto:
        return score_role(Pairing(role, self.task.role[role], candidate.series, self.rules.weights,
                                  self.injection_s, self.enhancement))

    def usable(self, scored: RoleScore | Veto) -> RoleScore | None:
        """The score when the pair may be assigned at all (not vetoed, at least the minimum)."""
        if isinstance(scored, Veto) or scored.score < self.rules.weights.min_score:
            return None
        return scored


# --- candidates -----------------------------------------------------------------------------------

def _preference(series: SeriesInfo, rules: Rules) -> tuple[float, ...]:
    thickness = series.slice_thickness or rules.weights.preferred_slice_thickness_mm
    return ("ORIGINAL" not in series.image_type, abs(thickness - rules.weights.preferred_slice_thickness_mm),
            -len(series.images))


def _same_acquisition(a: SeriesInfo, b: SeriesInfo) -> bool:
    if a.acquisition_seconds is None or b.acquisition_seconds is None:
        return False
    return (abs(a.acquisition_seconds - b.acquisition_seconds) <= SAME_ACQUISITION_S
            and a.description.lower() == b.description.lower() and a.echo_time == b.echo_time
            and a.scanning_sequence == b.scanning_sequence and a.b_values == b.b_values)


def candidates_from(series: Sequence[SeriesInfo], rules: Rules) -> list[Candidate]:
    """One candidate per acquisition, its preferred reconstruction first."""
    groups: list[list[SeriesInfo]] = []
    for s in sorted(series, key=lambda x: _preference(x, rules)):
        for group in groups:
            if _same_acquisition(group[0], s):
                group.append(s)
                break
        else:
            groups.append([s])
    return [Candidate(g[0], g[1:]) for g in groups]


def injection_hypotheses(cands: list[Candidate], task: TaskRules) -> tuple[list[float | None], bool]:
    """Injection times to try, and whether they come from the headers (else estimated)."""
    starts = {c.series.contrast_start_seconds for c in cands if c.series.contrast_start_seconds is not None}
    if starts:
        return list(sorted(starts)), True
    if not task.timed:
        return [None], False
    times = sorted({c.time for c in cands if c.time is not None})
    estimates: list[float | None] = [None]
    return estimates + [t - NOMINAL_ARTERIAL_DELAY_S for t in times], False


# --- timed roles: dynamic programming over acquisition order --------------------------------------

def _in_acquisition_order(cands: list[Candidate]) -> list[Candidate]:
    if cands and all(c.time is None for c in cands):
        # No acquisition times at all: series (and acquisition) numbers are the order of acquisition.
        return sorted(cands, key=lambda c: (c.series.series_number or 0, c.series.acquisition_number or 0))
    return sorted([c for c in cands if c.time is not None], key=lambda c: c.time or 0.0)


def best_timed(cands: list[Candidate], scoring: Scoring) -> tuple[float, Assignment]:
    """Order-respecting assignment of the timed roles with the highest total score."""
    timed = list(scoring.task.timed)
    ordered = _in_acquisition_order(cands)
    scores = {(r, id(c)): scoring.usable(scoring(r, c)) for r in timed for c in ordered}
    # best[i][j]: best total using roles[:i] and candidates[:j]
    n, m = len(timed), len(ordered)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    choice: dict[tuple[int, int], str] = {}
    for i in range(1, n + 1):
        for j in range(0, m + 1):
            options = [(best[i - 1][j], "skip_role")]
            if j > 0:
                options.append((best[i][j - 1], "skip_cand"))
                scored = scores[(timed[i - 1], id(ordered[j - 1]))]
                if scored is not None:
                    options.append((best[i - 1][j - 1] + scored.score, "take"))
            best[i][j], choice[(i, j)] = max(options, key=lambda o: o[0])
    assignment: Assignment = {}
    i, j = n, m
    while i > 0:
        step = choice.get((i, j), "skip_role")
        if step == "take":
            scored = scores[(timed[i - 1], id(ordered[j - 1]))]
            assert scored is not None  # "take" is only offered for a usable score
            assignment[timed[i - 1]] = Pick(ordered[j - 1], scored.score, scored.reasons)
            i, j = i - 1, j - 1
        elif step == "skip_cand":
            j -= 1
        else:
            i -= 1
    return best[n][m], assignment


# --- untimed roles: maximum-weight matching ---------------------------------------------------------

def best_untimed(cands: list[Candidate], roles: list[str], scoring: Scoring) -> tuple[float, Assignment]:
    """Distinct series for the roles told apart by physics, maximising the total score."""
    if not roles or not cands:
        return 0.0, {}
    scored = {(r, k): scoring.usable(scoring(r, c)) for r in roles for k, c in enumerate(cands)}
    matrix = np.full((len(roles), len(cands)), UNMATCHABLE)
    for (r, k), value in scored.items():
        if value is not None:
            matrix[roles.index(r), k] = value.score
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    assignment: Assignment = {}
    total = 0.0
    for row, col in zip(rows, cols, strict=True):
        value = scored[(roles[row], int(col))]
        if value is not None:
            assignment[roles[row]] = Pick(cands[col], value.score, value.reasons)
            total += value.score
    return total, assignment


# --- ambiguity ------------------------------------------------------------------------------------

def _order_holds(assignment: Assignment, role: str, rival: Candidate, task: TaskRules) -> bool:
    times = []
    for r in task.timed:
        if r == role:
            times.append(rival.time)
        elif r in assignment:
            times.append(assignment[r].candidate.time)
    known = [t for t in times if t is not None]
    return all(a < b for a, b in itertools.pairwise(known))


def ambiguities(assignment: Assignment, cands: list[Candidate], scoring: Scoring) -> list[str]:
    """Required roles for which an unused acquisition scores (nearly) as well as the chosen one."""
    task = scoring.task
    used = {id(pick.candidate) for pick in assignment.values()}
    problems = []
    for role in task.required:
        if role not in assignment:
            continue
        chosen = assignment[role]
        for rival in cands:
            if id(rival) in used:
                continue
            value = scoring(role, rival)
            if isinstance(value, Veto) or value.score < chosen.score - scoring.rules.weights.ambiguity_margin:
                continue
            if role in task.timed and not _order_holds(assignment, role, rival, task):
                continue
            problems.append(f"{role}: {rival.series.description!r} ({rival.series.key}) scores "
                            f"{value.score:.1f} against {chosen.score:.1f} for the chosen "
                            f"{chosen.candidate.series.description!r}")
    return problems
