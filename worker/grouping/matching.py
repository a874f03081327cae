"""Assign series to roles: score every (role, series) pair, then choose the best consistent set.

Each signal that holds adds its weight and a reason a person can read; a hard condition that
fails removes the pair. Timed roles (contrast phases) must follow each other in acquisition
order; when the injection time is not in the headers, every plausible injection time (just before
each candidate's acquisition) is tried and the most coherent reading wins. Reconstructions of the
same acquisition (thin and thick slices) are one candidate, represented by the preferred one.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from worker.grouping.rules import RoleRule, Rules, TaskRules
from worker.grouping.series_info import SeriesInfo
from worker.grouping.splitting import split_phases

SAME_ACQUISITION_S = 2.0
NOMINAL_ARTERIAL_DELAY_S = 30.0  # where the arterial phase sits after injection, for estimating it
FAT_WATER_PPM_HZ_PER_T = 3.4 * 42.577  # chemical shift of fat against water, Hz per tesla


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


# --- scoring ------------------------------------------------------------------------------------

def fat_water_phase(echo_time_ms: float, field_t: float) -> float:
    """Fraction of the fat-water cycle at this echo time: ~0 in phase, ~0.5 opposed."""
    period_ms = 1000.0 / (FAT_WATER_PPM_HZ_PER_T * field_t)
    return (echo_time_ms / period_ms) % 1.0


def _in_range(value: float | None, bounds: tuple[float, float] | None) -> bool | None:
    if value is None or bounds is None:
        return None
    return bounds[0] <= value <= bounds[1]


def _is_diffusion(series: SeriesInfo) -> bool | None:
    if any(b > 0 for b in series.b_values) or {"DIFFUSION", "TRACEW", "TRACE"} & set(series.image_type):
        return True
    if "EP" in series.scanning_sequence:
        return None  # echo-planar without b-value tags: cannot tell
    return False if series.scanning_sequence or series.b_values else None


def score_role(role: str, rule: RoleRule, series: SeriesInfo, rules: Rules,
               injection_s: float | None, enhancement: dict[int, float] | None = None) -> tuple[float, list[str]] | None:
    """Score of ``series`` for ``role`` with its reasons, or None when a hard condition fails."""
    w = rules.weights
    reasons: list[str] = []
    score = 0.0
    text = series.text
    for pattern in rule.description_not:
        if re.search(pattern, text, re.IGNORECASE):
            return None
    if any(t in series.image_type for t in rule.image_type_not):
        return None

    diffusion = _is_diffusion(series)
    if rule.diffusion is not None and diffusion is not None:
        if diffusion != rule.diffusion:
            return None
        if diffusion:
            score += w.physics
            reasons.append(f"diffusion-weighted (b-values {sorted(series.b_values) or 'in image type'})")

    if rule.sequence and series.scanning_sequence:
        if not set(rule.sequence) & set(series.scanning_sequence):
            return None
        score += w.physics / 2
        reasons.append(f"sequence {'/'.join(series.scanning_sequence)}")
    for name, value, bounds in (("echo time", series.echo_time, rule.echo_time_ms),
                                ("repetition time", series.repetition_time, rule.repetition_time_ms)):
        ok = _in_range(value, bounds)
        if ok is False:
            return None
        if ok:
            score += w.physics / 2
            reasons.append(f"{name} {value:g} ms")
    ok = _in_range(series.echo_train_length, rule.echo_train_length)
    if ok is not None:
        score += w.physics if ok else -w.physics
        reasons.append(f"echo train length {series.echo_train_length:g}" + ("" if ok else " (atypical)"))
    if rule.fat_water and series.echo_time is not None and series.field_strength:
        phase = fat_water_phase(series.echo_time, series.field_strength)
        in_phase = min(phase, 1 - phase) < 0.2
        opposed = abs(phase - 0.5) < 0.2
        if (rule.fat_water == "in" and not in_phase) or (rule.fat_water == "out" and not opposed):
            return None
        score += w.physics * 1.5
        reasons.append(f"echo time {series.echo_time:g} ms at {series.field_strength:g} T: "
                       f"{'in' if in_phase else 'opposed'} phase")
    if rule.dimension and series.mr_acquisition_type:
        if series.mr_acquisition_type.upper() == rule.dimension:
            score += w.dimension
            reasons.append(f"{rule.dimension} acquisition")

    for pattern in rule.description:
        if re.search(pattern, text, re.IGNORECASE):
            score += w.description
            reasons.append(f"description {series.description!r} matches {role}")
            break
    if rule.image_type and any(t in series.image_type for t in rule.image_type):
        score += w.image_type
        reasons.append(f"image type {'/'.join(series.image_type)}")
    if rule.contrast is not None and series.contrast_agent is not None:
        # An agent named on a series is a strong sign of contrast; its absence is weaker (many
        # scanners fill it on every series of the examination, some on none).
        if rule.contrast:
            score += w.contrast
            reasons.append("contrast agent recorded")
    elif rule.contrast is False and series.contrast_agent is None and series.modality == "CT":
        score += w.contrast
        reasons.append("no contrast agent recorded")
    if rule.image_check == "highest_enhancement" and enhancement and id(series) in enhancement:
        if enhancement[id(series)] >= max(enhancement.values()):
            score += w.image
            reasons.append(f"strongest vessel enhancement of all phases on a common level "
                           f"(+{enhancement[id(series)]:.0f} HU above the lowest)")
    if rule.seconds_after_injection and injection_s is not None and series.acquisition_seconds is not None:
        after = series.acquisition_seconds - injection_s
        if rule.seconds_after_injection[0] <= after <= rule.seconds_after_injection[1]:
            score += w.timing
            reasons.append(f"acquired {after:+.0f} s after injection "
                           f"({role} window {rule.seconds_after_injection[0]:g} to "
                           f"{rule.seconds_after_injection[1]:g} s)")
        else:
            score -= w.timing
            reasons.append(f"acquired {after:+.0f} s after injection, outside the {role} window")
    return score, reasons


# --- candidates -----------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One acquisition: the preferred reconstruction and the others of the same acquisition."""

    series: SeriesInfo
    others: list[SeriesInfo]

    @property
    def time(self) -> float | None:
        return self.series.acquisition_seconds


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
    groups: list[list[SeriesInfo]] = []
    for s in sorted(series, key=lambda x: _preference(x, rules)):
        for group in groups:
            if _same_acquisition(group[0], s):
                group.append(s)
                break
        else:
            groups.append([s])
    return [Candidate(g[0], g[1:]) for g in groups]


# --- assignment -----------------------------------------------------------------------------------

Assignment = dict[str, tuple[Candidate, float, list[str]]]


def _injection_hypotheses(cands: list[Candidate], task: TaskRules) -> tuple[list[float | None], bool]:
    """Injection times to try, and whether they come from the headers (else estimated)."""
    starts = {c.series.contrast_start_seconds for c in cands if c.series.contrast_start_seconds is not None}
    if starts:
        return sorted(starts), True
    if not task.timed:
        return [None], False
    times = sorted({c.time for c in cands if c.time is not None})
    return [None] + [t - NOMINAL_ARTERIAL_DELAY_S for t in times], False


def _best_timed(cands: list[Candidate], task: TaskRules, rules: Rules,
                injection: float | None, enhancement: dict[int, float] | None = None) -> tuple[float, Assignment]:
    """Order-respecting assignment of the timed roles (dynamic programming over time order)."""
    timed = [r for r in task.timed]
    if cands and all(c.time is None for c in cands):
        # No acquisition times at all: series (and acquisition) numbers are the order of acquisition.
        ordered = sorted(cands, key=lambda c: (c.series.series_number or 0, c.series.acquisition_number or 0))
    else:
        ordered = sorted([c for c in cands if c.time is not None], key=lambda c: c.time or 0.0)
    scores = {(r, id(c)): score_role(r, task.role[r], c.series, rules, injection, enhancement)
              for r in timed for c in ordered}
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
                if scored is not None and scored[0] >= rules.weights.min_score:
                    options.append((best[i - 1][j - 1] + scored[0], "take"))
            best[i][j], choice[(i, j)] = max(options, key=lambda o: o[0])
    assignment: Assignment = {}
    i, j = n, m
    while i > 0:
        step = choice.get((i, j), "skip_role")
        if step == "take":
            scored = scores[(timed[i - 1], id(ordered[j - 1]))]
            assert scored is not None
            assignment[timed[i - 1]] = (ordered[j - 1], scored[0], scored[1])
            i, j = i - 1, j - 1
        elif step == "skip_cand":
            j -= 1
        else:
            i -= 1
    return best[n][m], assignment


def _best_untimed(cands: list[Candidate], roles: list[str], task: TaskRules, rules: Rules,
                  injection: float | None) -> tuple[float, Assignment]:
    """Distinct series for the roles told apart by physics, maximising the total score."""
    if not roles or not cands:
        return 0.0, {}
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 - only when MR roles exist

    import numpy as np  # noqa: PLC0415

    scored = {(r, k): score_role(r, task.role[r], c.series, rules, injection)
              for r in roles for k, c in enumerate(cands)}
    matrix = np.full((len(roles), len(cands)), -1e6)
    for (r, k), value in scored.items():
        if value is not None and value[0] >= rules.weights.min_score:
            matrix[roles.index(r), k] = value[0]
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    assignment: Assignment = {}
    total = 0.0
    for row, col in zip(rows, cols, strict=True):
        if matrix[row, col] > -1e5:
            value = scored[(roles[row], col)]
            assert value is not None
            assignment[roles[row]] = (cands[col], value[0], value[1])
            total += value[0]
    return total, assignment


def _ambiguities(assignment: Assignment, cands: list[Candidate], task: TaskRules, rules: Rules,
                 injection: float | None, enhancement: dict[int, float] | None = None) -> list[str]:
    """Required roles for which an unused acquisition scores (nearly) as well as the chosen one."""
    used = {id(c) for c, _, _ in assignment.values()}
    problems = []
    for role in task.required:
        if role not in assignment:
            continue
        chosen, score, _ = assignment[role]
        for rival in cands:
            if id(rival) in used:
                continue
            value = score_role(role, task.role[role], rival.series, rules, injection, enhancement)
            if value is None or value[0] < score - rules.weights.ambiguity_margin:
                continue
            if role in task.timed and not _order_holds(assignment, role, rival, task):
                continue
            problems.append(f"{role}: {rival.series.description!r} ({rival.series.key}) scores "
                            f"{value[0]:.1f} against {score:.1f} for the chosen "
                            f"{chosen.series.description!r}")
    return problems


def _order_holds(assignment: Assignment, role: str, rival: Candidate, task: TaskRules) -> bool:
    times = []
    for r in task.timed:
        if r == role:
            times.append(rival.time)
        elif r in assignment:
            times.append(assignment[r][0].time)
    known = [t for t in times if t is not None]
    return all(a < b for a, b in itertools.pairwise(known))


def choose_task(series: Sequence[SeriesInfo], rules: Rules) -> str | None:
    counts = {name: sum(1 for s in series if s.modality == t.modality and s.is_image_series)
              for name, t in rules.task.items()}
    name, count = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
    return name if count else None


def group_study(study_uid: str, series: Sequence[SeriesInfo], rules: Rules, task_name: str | None = None) -> Grouping:
    """Identify the roles of one study's series under ``rules``."""
    task_name = task_name or choose_task(series, rules)
    if task_name is None or task_name not in rules.task:
        excluded = {s.series_uid: "no analysis task for this modality" for s in series}
        return Grouping(study_uid, None, Outcome.NOT_APPLICABLE, {}, excluded,
                        ["no CT or MR image series that a task applies to"])
    task = rules.task[task_name]
    excluded: dict[str, str] = {}
    usable: list[SeriesInfo] = []
    notes: list[str] = []
    for s in series:
        reason = exclusion_reason(s, rules, {task.modality})
        if reason:
            excluded[s.series_uid] = reason
            continue
        parts, split_note = split_phases(s)
        if split_note:
            notes.append(f"{s.description!r}: {split_note}")
        usable.extend(parts)
    cands = candidates_from(usable, rules)
    untimed = [r for r in task.roles if r not in task.timed]

    best: tuple[float, Assignment, float | None] = (-math.inf, {}, None)
    enhancement: dict[int, float] = {}
    if any(task.role[r].image_check for r in task.roles):
        from worker.grouping.image_check import peak_enhancement  # noqa: PLC0415 - reads pixels

        contrast_like = [c.series for c in cands if c.series.modality == "CT"]
        enhancement = peak_enhancement(contrast_like)
    hypotheses, from_headers = _injection_hypotheses(cands, task)
    for injection in hypotheses:
        timed_total, timed_assignment = _best_timed(cands, task, rules, injection, enhancement)
        rest = [c for c in cands if all(c is not a for a, _, _ in timed_assignment.values())]
        untimed_total, untimed_assignment = _best_untimed(rest, untimed, task, rules, injection)
        total = timed_total + untimed_total
        if total > best[0]:
            best = (total, {**timed_assignment, **untimed_assignment}, injection)
    _, assignment, injection = best

    roles: dict[str, RoleMatch | None] = {}
    for role in task.roles:
        if role not in assignment:
            roles[role] = None
            continue
        cand, score, reasons = assignment[role]
        reasons = list(reasons)
        if injection is not None and not from_headers and role in task.timed:
            reasons.append("injection time estimated from the acquisition times (no ContrastBolusStartTime)")
        if cand.others:
            reasons.append(f"preferred over {len(cand.others)} other reconstruction(s) of the same acquisition")
        if role in task.timed and cand.time is None:
            reasons.append("no acquisition times in the headers: series numbers taken as the order of acquisition")
        roles[role] = RoleMatch(cand.series, score, tuple(reasons))
    used_series = {m.series.series_uid for m in roles.values() if m is not None}
    for cand in cands:
        chosen = any(m is not None and m.series is cand.series for m in roles.values())
        for s in ([] if chosen else [cand.series]) + cand.others:
            if s.series_uid not in used_series:
                excluded.setdefault(s.series_uid, "another reconstruction of the same acquisition was preferred"
                                    if chosen else "no role matched this series")

    problems = list(notes)
    missing = [r for r in task.required if roles.get(r) is None]
    ambiguous = _ambiguities(assignment, cands, task, rules, injection, enhancement)
    frames = {m.series.frame_of_reference for m in roles.values() if m is not None}
    if len(frames - {None}) > 1:
        problems.append("the chosen series do not share one frame of reference")
    if missing:
        outcome = Outcome.INCOMPLETE
        problems.append(f"required role(s) not found: {', '.join(missing)}")
    elif ambiguous:
        outcome = Outcome.AMBIGUOUS
        problems.extend(ambiguous)
    else:
        outcome = Outcome.OK
    return Grouping(study_uid, task_name, outcome, roles, excluded, problems)
