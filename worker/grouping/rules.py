"""The grouping rules file (TOML): typed, validated, with the shipped liver defaults.

Rules are data so that a site can adapt them to its scanners without code; validation happens
when the file is loaded, so a typo in a site's file is one clear error, not a wrong grouping.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_RULES = "liver_rules.toml"
Range = tuple[float, float]


class RulesError(ValueError):
    """The rules file cannot be read or is invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weights(_Strict):
    description: float = 1.5
    timing: float = 3.0
    contrast: float = 1.0
    image_type: float = 1.0
    physics: float = 2.0
    dimension: float = 0.5
    image: float = 1.0
    min_score: float = 1.0
    ambiguity_margin: float = 0.5
    preferred_slice_thickness_mm: float = 5.0


class Exclusions(_Strict):
    image_type: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    min_images: int = 5

    @field_validator("description")
    @classmethod
    def _compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return _check_patterns(patterns)


class RoleRule(_Strict):
    description: tuple[str, ...] = ()
    description_not: tuple[str, ...] = ()
    image_type: tuple[str, ...] = ()
    image_type_not: tuple[str, ...] = ()
    contrast: bool | None = None
    seconds_after_injection: Range | None = None
    sequence: tuple[str, ...] = ()
    dimension: Literal["2D", "3D"] | None = None
    echo_time_ms: Range | None = None
    repetition_time_ms: Range | None = None
    echo_train_length: Range | None = None
    fat_water: Literal["in", "out"] | None = None
    diffusion: bool | None = None
    image_check: Literal["highest_enhancement"] | None = None

    @field_validator("description", "description_not")
    @classmethod
    def _compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return _check_patterns(patterns)


class TaskRules(_Strict):
    modality: str
    roles: tuple[str, ...]
    required: tuple[str, ...]
    timed: tuple[str, ...] = ()
    reference: str
    role: dict[str, RoleRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> TaskRules:
        names = set(self.roles)
        for group, values in (("required", self.required), ("timed", self.timed), ("role", self.role)):
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"{group} names roles not in roles: {sorted(unknown)}")
        if self.reference not in names:
            raise ValueError(f"reference role {self.reference!r} is not in roles")
        missing = names - set(self.role)
        if missing:
            raise ValueError(f"no rule for roles {sorted(missing)}")
        return self


class Rules(_Strict):
    weights: Weights = Weights()
    exclude: Exclusions = Exclusions()
    task: dict[str, TaskRules]
    source: str = "shipped defaults"


def _check_patterns(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return patterns


def load_rules(path: Path | None = None) -> Rules:
    """The site's rules file, or the shipped defaults when ``path`` is None."""
    try:
        if path is None:
            text = resources.files("worker.grouping").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")
            source = "shipped defaults"
        else:
            text = Path(path).read_text(encoding="utf-8")
            source = str(path)
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"cannot read rules file {path}: {exc}") from exc
    try:
        return Rules(**data, source=source)
    except ValidationError as exc:
        raise RulesError(f"invalid rules file {source}: {exc}") from exc
