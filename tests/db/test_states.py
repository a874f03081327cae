from __future__ import annotations

import pytest

from db.states import TERMINAL, TRANSITIONS, IllegalTransition, JobState, check_transition


def test_every_state_has_a_rule_and_terminal_states_are_final() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert TERMINAL == {JobState.SHADOWED, JobState.SKIPPED}


@pytest.mark.parametrize("current", list(JobState))
def test_no_state_moves_back_to_ready(current: JobState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, JobState.READY)


def test_accepts_strings() -> None:
    assert check_transition("running", "analysed") is JobState.ANALYSED
    with pytest.raises(ValueError):
        check_transition("running", "bogus")
