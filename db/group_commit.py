"""Group commit: the rows of several associations written in one transaction, behind one fsync.

Every C-STORE success waits for its own row to be on disk; nothing here answers before the commit
that holds the row. But a commit costs one fsync whether it holds one row or ten, and SQLite has one
writer: with several associations storing at once, each row used to queue for a transaction of its
own, so the rows of a busy node went to disk one fsync at a time.

Here the first caller to find no transaction under way leads: it writes its own item and every item
waiting at that moment in one transaction, commits, and hands each its result. Callers that arrive
while it writes wait for the next leader (one of them) instead of for a turn each. With one
association nobody is ever waiting, and each item is one transaction as before.

A transaction that fails as a whole fails no item for another's sake: each item of a failed group
is written again alone, by its own caller, and meets its own error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

MAX_GROUP = 64  # items in one transaction: bounds the time a leader spends on others' rows


class _Waiting(Generic[T, R]):
    """One caller's item and, once its group's transaction has ended, the outcome."""

    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


_ALONE = object()  # the group failed: write this item again in a transaction of its own


class GroupCommit(Generic[T, R]):
    """Runs ``write(items) -> results`` (one transaction, one result per item, in order) for
    items of concurrent callers, several at a time; :meth:`run` returns the caller's own result."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], *, max_group: int = MAX_GROUP) -> None:
        self._write = write
        self._max_group = max_group
        self._queue: list[_Waiting[T, R]] = []
        self._leading = False
        self._turn = threading.Condition()
        self.groups = 0  # transactions led (for tests and benchmarks)
        self.items = 0  # items in them

    def waiting(self) -> int:
        """Items queued for the next group (not those being written)."""
        with self._turn:
            return len(self._queue)

    def run(self, item: T) -> R:
        """Write ``item`` (with whatever else is waiting); its result, or its error."""
        mine: _Waiting[T, R] = _Waiting(item)
        with self._turn:
            self._queue.append(mine)
            while not mine.done and self._leading:
                self._turn.wait()
            if not mine.done:
                group = self._take_group(mine)
        if not mine.done:
            self._lead(group)
        if mine.error is not None:
            raise mine.error
        if mine.result is _ALONE:
            return self._write([item])[0]
        return cast(R, mine.result)

    def _take_group(self, mine: _Waiting[T, R]) -> list[_Waiting[T, R]]:
        """Lead: this caller's item first, then the others waiting, oldest first (under the lock)."""
        self._leading = True
        self._queue.remove(mine)
        group, self._queue = [mine, *self._queue[: self._max_group - 1]], self._queue[self._max_group - 1:]
        return group

    def _lead(self, group: list[_Waiting[T, R]]) -> None:
        results: Sequence[object] = [_ALONE] * len(group)
        error: Exception | None = None
        try:
            written = self._write([waiting.item for waiting in group])
            if len(written) != len(group):
                raise RuntimeError(f"a group of {len(group)} items gave {len(written)} results")
            results = written
        except Exception as exc:  # noqa: BLE001 - the item's caller raises it; a group's items go alone
            error = exc
        finally:  # even when interrupted, the waiting callers are released
            self._settle(group, results, error)

    def _settle(self, group: list[_Waiting[T, R]], results: Sequence[object], error: Exception | None) -> None:
        with self._turn:
            for waiting, result in zip(group, results, strict=True):
                waiting.result = cast(R, result)
                waiting.done = True
            if len(group) == 1 and error is not None:
                group[0].error = error
            self.groups += 1
            self.items += len(group)
            self._leading = False
            self._turn.notify_all()
