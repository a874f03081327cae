"""Small synthetic studies shared by the synth tests (generated once per session)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from synth_helpers import small_options

from worker.synth.study import StudyRecord, generate_study


@pytest.fixture(scope="session")
def make_study(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., StudyRecord]:
    """Generate (once per distinct arguments) a study into its own folder and return its record."""
    cache: dict[tuple, StudyRecord] = {}

    def make(task: str, *, index: int = 0, labels: tuple[str, ...] | None = None,
             **overrides: object) -> StudyRecord:
        key = (task, index, labels, tuple(sorted(overrides.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp("synth")
            cache[key] = generate_study(folder, small_options(task, **overrides), index, labels=labels)
        return cache[key]

    return make
