"""Frozen records that cross from the pipeline into the repository.

The repository writes what these hold and nothing else; the worker builds them. Keeping them in
:mod:`db` (which imports none of ours) lets both sides share one definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LesionPrediction:
    """One lesion's result as the worker computed it and the ``predictions`` table stores it.

    ``label`` is a class name or ``"indeterminate"`` (abstention); ``top_class`` is the most
    probable class either way. ``motion`` is the registration shift per role (JSON-ready).
    """

    lesion_id: str
    label: str
    top_class: str
    probabilities: Mapping[str, float]
    roi_source: str
    slice_index: int
    motion: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"lesion_id": self.lesion_id, "label": self.label, "top_class": self.top_class,
                "probabilities": dict(self.probabilities), "roi_source": self.roi_source,
                "slice_index": self.slice_index, "motion": {k: None if v is None else dict(v)
                                                             for k, v in self.motion.items()}}
