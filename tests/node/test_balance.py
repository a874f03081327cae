"""Taking turns on shared listeners (node.balance): the process holding fewest connections is due."""

from __future__ import annotations

import time

import pytest

from node import balance
from node.balance import AcceptBoard, AcceptTurn

pytestmark = pytest.mark.timeout(30)


def turns(count: int) -> list[AcceptTurn]:
    board = AcceptBoard(count)
    joined = [AcceptTurn(board, index) for index in range(count)]
    for turn in joined:
        turn.join()
    return joined


def test_the_process_holding_fewest_connections_is_due() -> None:
    first, second = turns(2)
    first.opened("a")
    assert first.board.due(1) and not first.board.due(0)
    second.opened("b")
    second.opened("c")
    assert first.board.due(0) and not first.board.due(1)
    second.closed("b")
    second.closed("c")
    second.closed("c")  # a connection is counted off once, however often it is closed
    assert second.held == 0 and first.held == 1
    assert first.board.due(1)


def test_ties_go_to_the_process_that_accepted_fewer_so_short_associations_alternate() -> None:
    first, second = turns(2)
    served = []
    for i in range(6):
        due = next(turn for turn in (first, second) if turn.board.due(turn.index))
        due.opened(i)
        due.closed(i)
        served.append(due.index)
    assert served in ([0, 1, 0, 1, 0, 1], [1, 0, 1, 0, 1, 0])


def test_absent_processes_take_no_turn_until_they_join() -> None:
    board = AcceptBoard(3)
    first = AcceptTurn(board, 0)
    first.join()
    for i in range(5):
        first.opened(i)
    assert board.due(0)  # the others have not started
    second = AcceptTurn(board, 1)
    second.join()
    assert board.due(1) and not board.due(0)
    second.leave()
    assert board.due(0)
    second.opened("x")  # still counted, not published while leaving
    assert board.held(1) == balance.ABSENT
    second.join()
    assert board.held(1) == 1


def test_a_process_that_is_not_due_pauses_then_takes_over_from_one_that_does_not_accept(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = turns(2)
    first.opened("held")  # the second is due but never accepts (stopped, say)
    monkeypatch.setattr(balance, "TAKEOVER_S", 0.05)
    started = time.monotonic()
    declines = 0
    while not first.may_accept():
        declines += 1
        assert time.monotonic() - started < 5
    waited = time.monotonic() - started
    assert declines >= 3 and 0.05 <= waited < 1.0
    # a new wait starts over: the next pending connection is left to the due process again
    time.sleep(0.1)
    assert not first.may_accept()
    assert second.may_accept()


def test_a_process_started_late_takes_its_share_not_every_tie() -> None:
    board = AcceptBoard(2)
    first = AcceptTurn(board, 0)
    first.join()
    for i in range(50):  # alone for a while: fifty short associations
        first.opened(i)
        first.closed(i)
    restarted = AcceptTurn(board, 1)
    restarted.join()
    served = []
    for i in range(6):
        due = next(turn for turn in (first, restarted) if board.due(turn.index))
        due.opened(f"late{i}")
        due.closed(f"late{i}")
        served.append(due.index)
    assert served.count(0) == 3 and served.count(1) == 3
