"""A node process hides its start-up objects from the cyclic collector and collects less often,
without keeping cyclic garbage made afterwards."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from node import collector

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_what_exists_and_later_cycles_are_still_collected(restored_collector: None) -> None:
    start_up = Node()
    collector.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == collector.YOUNGEST_THRESHOLD
    assert not any(obj is start_up for obj in gc.get_objects())  # out of every generation's sight
    later = Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None
