"""How well one series fits one role: a list of small signal checks, each read on its own.

A check looks at one kind of evidence (a header tag, a physical parameter, the timing, the pixels)
and answers with a :class:`Signal` (a weight, positive or negative, and the reason a person reads
in ``triphase groups``), a :class:`Veto` (a hard condition of the role fails: the pair is out), or
nothing (the evidence is absent, or the rule does not ask for it). :func:`score_role` sums the
signals in the order of :data:`CHECKS`, which is also the order of the reasons.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from worker.grouping.rules import RoleRule, Weights
from worker.grouping.series_info import SeriesInfo

FAT_WATER_PPM_HZ_PER_T = 3.4 * 42.577  # chemical shift of fat against water, Hz per tesla


@dataclass(frozen=True)
class Signal:
    """Evidence for (positive score) or against (negative score) a role, with its reason."""

    score: float
    reason: str


@dataclass(frozen=True)
class Veto:
    """A hard condition of the role fails: the series cannot carry it, whatever else holds."""

    reason: str


@dataclass(frozen=True)
class RoleScore:
    """The sum of a pair's signals and their reasons, in check order."""

    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Pairing:
    """One (role, series) pair and what the checks may consult beyond the pair itself.

    ``enhancement`` maps ``id(series)`` to the series' vessel enhancement (HU above the lowest
    phase) when the pixels were read; ``injection_s`` is the injection time being tried.
    """

    role: str
    rule: RoleRule
    series: SeriesInfo
    weights: Weights
    injection_s: float | None = None
    enhancement: Mapping[int, float] | None = None


Check = Callable[[Pairing], Signal | Veto | None]


def fat_water_phase(echo_time_ms: float, field_t: float) -> float:
    """Fraction of the fat-water cycle at this echo time: ~0 in phase, ~0.5 opposed."""
    period_ms = 1000.0 / (FAT_WATER_PPM_HZ_PER_T * field_t)
    return (echo_time_ms / period_ms) % 1.0


def _in_range(value: float | None, bounds: tuple[float, float] | None) -> bool | None:
    if value is None or bounds is None:
        return None
    return bounds[0] <= value <= bounds[1]


def is_diffusion(series: SeriesInfo) -> bool | None:
    """Whether the series is diffusion-weighted; None when its headers cannot tell."""
    if any(b > 0 for b in series.b_values) or {"DIFFUSION", "TRACEW", "TRACE"} & set(series.image_type):
        return True
    if "EP" in series.scanning_sequence:
        return None  # echo-planar without b-value tags: cannot tell
    return False if series.scanning_sequence or series.b_values else None


# --- hard conditions ------------------------------------------------------------------------------

def excluded_description(p: Pairing) -> Veto | None:
    for pattern in p.rule.description_not:
        if re.search(pattern, p.series.text, re.IGNORECASE):
            return Veto(f"description matches {pattern!r}, which {p.role} excludes")
    return None


def excluded_image_type(p: Pairing) -> Veto | None:
    hits = [t for t in p.rule.image_type_not if t in p.series.image_type]
    return Veto(f"image type {'/'.join(hits)}, which {p.role} excludes") if hits else None


# --- physics (MR) ---------------------------------------------------------------------------------

def diffusion(p: Pairing) -> Signal | Veto | None:
    found = is_diffusion(p.series)
    if p.rule.diffusion is None or found is None:
        return None
    if found != p.rule.diffusion:
        return Veto("diffusion-weighted" if found else "not diffusion-weighted")
    if not found:
        return None
    return Signal(p.weights.physics,
                  f"diffusion-weighted (b-values {sorted(p.series.b_values) or 'in image type'})")


def sequence(p: Pairing) -> Signal | Veto | None:
    if not (p.rule.sequence and p.series.scanning_sequence):
        return None
    if not set(p.rule.sequence) & set(p.series.scanning_sequence):
        return Veto(f"sequence {'/'.join(p.series.scanning_sequence)}")
    return Signal(p.weights.physics / 2, f"sequence {'/'.join(p.series.scanning_sequence)}")


def _timing_parameter(name: str, value: float | None, bounds: tuple[float, float] | None,
                      weights: Weights) -> Signal | Veto | None:
    ok = _in_range(value, bounds)
    if ok is None:
        return None
    if not ok:
        return Veto(f"{name} {value:g} ms outside {bounds}")
    return Signal(weights.physics / 2, f"{name} {value:g} ms")


def echo_time(p: Pairing) -> Signal | Veto | None:
    return _timing_parameter("echo time", p.series.echo_time, p.rule.echo_time_ms, p.weights)


def repetition_time(p: Pairing) -> Signal | Veto | None:
    return _timing_parameter("repetition time", p.series.repetition_time, p.rule.repetition_time_ms, p.weights)


def echo_train_length(p: Pairing) -> Signal | None:
    ok = _in_range(p.series.echo_train_length, p.rule.echo_train_length)
    if ok is None:
        return None
    reason = f"echo train length {p.series.echo_train_length:g}" + ("" if ok else " (atypical)")
    return Signal(p.weights.physics if ok else -p.weights.physics, reason)


def fat_water(p: Pairing) -> Signal | Veto | None:
    te, field_t = p.series.echo_time, p.series.field_strength
    if not p.rule.fat_water or te is None or not field_t:
        return None
    phase = fat_water_phase(te, field_t)
    in_phase = min(phase, 1 - phase) < 0.2
    opposed = abs(phase - 0.5) < 0.2
    if (p.rule.fat_water == "in" and not in_phase) or (p.rule.fat_water == "out" and not opposed):
        return Veto(f"echo time {te:g} ms at {field_t:g} T is not {p.rule.fat_water} phase")
    return Signal(p.weights.physics * 1.5,
                  f"echo time {te:g} ms at {field_t:g} T: {'in' if in_phase else 'opposed'} phase")


def dimension(p: Pairing) -> Signal | None:
    acquisition = p.series.mr_acquisition_type
    if p.rule.dimension and acquisition and acquisition.upper() == p.rule.dimension:
        return Signal(p.weights.dimension, f"{p.rule.dimension} acquisition")
    return None


# --- headers that name the role -------------------------------------------------------------------

def description(p: Pairing) -> Signal | None:
    for pattern in p.rule.description:
        if re.search(pattern, p.series.text, re.IGNORECASE):
            return Signal(p.weights.description, f"description {p.series.description!r} matches {p.role}")
    return None


def image_type(p: Pairing) -> Signal | None:
    if p.rule.image_type and any(t in p.series.image_type for t in p.rule.image_type):
        return Signal(p.weights.image_type, f"image type {'/'.join(p.series.image_type)}")
    return None


def contrast(p: Pairing) -> Signal | None:
    """An agent named on a series is a strong sign of contrast; its absence is weaker.

    Many scanners fill the agent on every series of the examination, some on none: an absent
    agent only counts for a CT series of a role that wants none.
    """
    agent = p.series.contrast_agent
    if p.rule.contrast is True and agent is not None:
        return Signal(p.weights.contrast, "contrast agent recorded")
    if p.rule.contrast is False and agent is None and p.series.modality == "CT":
        return Signal(p.weights.contrast, "no contrast agent recorded")
    return None


# --- pixels and timing ----------------------------------------------------------------------------

def enhancement(p: Pairing) -> Signal | None:
    values = p.enhancement
    if p.rule.image_check != "highest_enhancement" or not values or id(p.series) not in values:
        return None
    value = values[id(p.series)]
    if value < max(values.values()):
        return None
    return Signal(p.weights.image, f"strongest vessel enhancement of all phases on a common level "
                                   f"(+{value:.0f} HU above the lowest)")


def timing(p: Pairing) -> Signal | None:
    window = p.rule.seconds_after_injection
    acquired = p.series.acquisition_seconds
    if not window or p.injection_s is None or acquired is None:
        return None
    after = acquired - p.injection_s
    if window[0] <= after <= window[1]:
        return Signal(p.weights.timing, f"acquired {after:+.0f} s after injection "
                                        f"({p.role} window {window[0]:g} to {window[1]:g} s)")
    return Signal(-p.weights.timing, f"acquired {after:+.0f} s after injection, outside the {p.role} window")


CHECKS: tuple[Check, ...] = (
    excluded_description, excluded_image_type,
    diffusion, sequence, echo_time, repetition_time, echo_train_length, fat_water, dimension,
    description, image_type, contrast, enhancement, timing,
)


def score_role(pairing: Pairing) -> RoleScore | Veto:
    """Every check's signal summed, with the reasons in check order; the first veto, if any."""
    score = 0.0
    reasons: list[str] = []
    for check in CHECKS:
        result = check(pairing)
        if isinstance(result, Veto):
            return result
        if result is not None:
            score += result.score
            reasons.append(result.reason)
    return RoleScore(score, tuple(reasons))
