"""Group commit: rows of concurrent callers share a transaction, each caller gets its own result
only once that transaction has ended, and a failed group fails no item for another's sake."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import String, func, select

from db.engine import Database
from db.group_commit import GroupCommit
from db.migrate import upgrade
from db.repository import Repository
from db.repository.instances import _KnownStudyItem
from db.schema import Instance, Study
from tests.concurrency import wait_until
from tests.db.test_writer_queue import _record

WAIT_S = 10.0


class GatedWrites:
    """A write function whose first call blocks until released, so that others queue behind it."""

    def __init__(self, fail: Callable[[Sequence[int]], bool] = lambda items: False) -> None:
        self.calls: list[list[int]] = []
        self.first_running = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.first_running.set()
            assert self.release.wait(WAIT_S)
        if self.fail(items):
            raise ValueError(f"refused {list(items)}")
        return [item * 10 for item in items]


def _callers(commits: GroupCommit[int, int], items: list[int]) -> tuple[list[threading.Thread], dict[int, object]]:
    outcomes: dict[int, object] = {}

    def call(item: int) -> None:
        try:
            outcomes[item] = commits.run(item)
        except ValueError as exc:
            outcomes[item] = exc

    threads = [threading.Thread(target=call, args=(item,)) for item in items]
    return threads, outcomes


def test_callers_arriving_during_a_write_share_the_next_one() -> None:
    writes = GatedWrites()
    commits: GroupCommit[int, int] = GroupCommit(writes)
    threads, outcomes = _callers(commits, [1, 2, 3, 4, 5])
    threads[0].start()
    assert writes.first_running.wait(WAIT_S)
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: commits.waiting() == 4, WAIT_S)
    assert outcomes == {}  # nobody is answered before their write ends
    writes.release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert writes.calls[0] == [1]
    assert len(writes.calls) == 2 and sorted(writes.calls[1]) == [2, 3, 4, 5]
    assert outcomes == {1: 10, 2: 20, 3: 30, 4: 40, 5: 50}
    assert (commits.groups, commits.items) == (2, 5)


def test_a_failed_group_writes_each_item_again_alone() -> None:
    """One bad item fails the group's transaction; the others still commit, alone, and only the
    bad item's caller sees the error."""
    writes = GatedWrites(fail=lambda items: 3 in items)
    commits: GroupCommit[int, int] = GroupCommit(writes)
    threads, outcomes = _callers(commits, [1, 2, 3, 4])
    threads[0].start()
    assert writes.first_running.wait(WAIT_S)
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: commits.waiting() == 3, WAIT_S)
    writes.release.set()
    for thread in threads:
        thread.join(WAIT_S)
    assert outcomes[1] == 10 and outcomes[2] == 20 and outcomes[4] == 40
    assert isinstance(outcomes[3], ValueError) and str(outcomes[3]) == "refused [3]"
    assert sorted(map(sorted, writes.calls[2:])) == [[2], [3], [4]]


def test_a_lone_callers_error_is_raised_to_it_and_the_next_caller_leads() -> None:
    def write(items: Sequence[int]) -> list[int]:
        if items == [1]:
            raise ValueError("disk full")
        return list(items)

    commits: GroupCommit[int, int] = GroupCommit(write)
    with pytest.raises(ValueError, match="disk full"):
        commits.run(1)
    assert commits.run(2) == 2


def test_a_write_giving_the_wrong_number_of_results_is_an_error() -> None:
    commits: GroupCommit[int, int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="gave 0 results"):
        commits.run(1)


def test_concurrent_instances_of_a_known_series_share_commits(tmp_path: Path) -> None:
    """Through the repository on SQLite: while one transaction holds the writer queue, the rows of
    the associations that arrive meanwhile are written together, once, and all are recorded."""
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}", busy_timeout_s=30)
    upgrade(database)
    repository = Repository(database)
    study, series = "1.2.826.0.1.3680043.99.1", "1.2.826.0.1.3680043.99.2"
    repository.record_instance(_record(study, series, 1000), quiet_period_s=30, hard_cap_s=3600)
    commits = repository._known_study_writes
    before = commits.groups
    records = [_record(study, series, n) for n in range(1, 7)]
    holding, done = threading.Event(), threading.Event()

    def hold_the_writer_turn() -> None:
        with database.session():
            holding.set()
            done.wait(WAIT_S)

    holder = threading.Thread(target=hold_the_writer_turn)
    holder.start()
    assert holding.wait(WAIT_S)
    results: list[object] = []
    threads = [threading.Thread(target=lambda r=record: results.append(  # type: ignore[misc]
        repository.record_instance(r, quiet_period_s=30, hard_cap_s=3600))) for record in records]
    for thread in threads:
        thread.start()
    wait_until(lambda: commits.waiting() == len(records) - 1, WAIT_S)  # one leads, awaiting its turn
    done.set()
    for thread in [holder, *threads]:
        thread.join(WAIT_S)
    assert len(results) == len(records)
    assert commits.groups - before == 2  # the leader's own row, then the five that waited
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 7
        assert session.scalar(select(Study.state)) == "receiving"
    database.close()


def test_a_re_sent_instance_in_a_group_takes_the_full_path(repository: Repository) -> None:
    """On SQLite and PostgreSQL: a group holding a new instance and a re-sent one commits the
    first and leaves the second to the full path, which counts and audits it."""
    study, series = "1.2.826.0.1.3680043.99.1", "1.2.826.0.1.3680043.99.2"
    first = _record(study, series, 1)
    repository.record_instance(first, quiet_period_s=30, hard_cap_s=3600)
    outcomes = repository._write_known_study([
        _KnownStudyItem(first, 30.0), _KnownStudyItem(_record(study, series, 2), 30.0)])
    assert outcomes[0] is None and outcomes[1] is not None and not outcomes[1].replaced
    again = repository.record_instance(first, quiet_period_s=30, hard_cap_s=3600)
    assert again.replaced



def test_a_group_writes_its_rows_study_by_study_and_answers_in_order(repository: Repository) -> None:
    """Rows of two studies, given interleaved: each caller's outcome is its own row's, and the
    statements lock the study rows in one order (no deadlock between two processes' groups)."""
    first, second = "1.2.826.0.1.3680043.99.7", "1.2.826.0.1.3680043.99.3"
    series = {first: "1.2.826.0.1.3680043.99.7.1", second: "1.2.826.0.1.3680043.99.3.1"}
    for n, study in enumerate((first, second)):
        repository.record_instance(_record(study, series[study], 100 + n), quiet_period_s=30, hard_cap_s=3600)
    records = [_record(study, series[study], n) for n, study in enumerate((first, second, first, second))]
    written: list[str] = []
    statements = repository._known_study_rows

    def spy(conn, item, now):  # type: ignore[no-untyped-def]
        written.append(item.record.study_uid)
        return statements(conn, item, now)

    repository._known_study_rows = spy  # type: ignore[method-assign]
    outcomes = repository._write_known_study([_KnownStudyItem(record, 30.0) for record in records])
    assert written == sorted(written)
    with repository.db.session() as session:
        study_ids = {uid: key for uid, key in session.execute(select(Study.study_uid, Study.id))}
    assert [outcome.study_id if outcome else None for outcome in outcomes] == [
        study_ids[record.study_uid] for record in records]


def test_the_fast_path_stores_values_exactly_as_the_full_path(repository: Repository) -> None:
    """On SQLite the three statements run on the driver's cursor (db.repository.prepared): every
    column of a row written that way reads back, and is stored, as one written through SQLAlchemy."""
    study, series = "1.2.826.0.1.3680043.99.11", "1.2.826.0.1.3680043.99.12"
    full = _record(study, series, 1)
    repository.record_instance(full, quiet_period_s=30, hard_cap_s=3600)
    fast = _record(study, series, 2)
    [outcome] = repository._write_known_study([_KnownStudyItem(fast, 45.0)])
    assert outcome is not None and outcome.study_revision == 1 and not outcome.replaced
    database = repository.db
    with database.session() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
        study_row = s.scalars(select(Study)).one()
        stored = dict(s.execute(select(Instance.sop_instance_uid, func.cast(Instance.received_at, String))).all())
    a, b = rows[full.sop_instance_uid], rows[fast.sop_instance_uid]
    for column in ("series_id", "sop_class_uid", "transfer_syntax_uid", "size_bytes", "sha256", "study_revision",
                   "association_id", "times_received"):
        assert getattr(a, column) == getattr(b, column), column
    assert b.path == fast.path and b.received_at >= a.received_at
    assert b.received_at.tzinfo == a.received_at.tzinfo
    if database.is_sqlite:  # the same text form (SQLite compares datetimes as text)
        pattern = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
        assert pattern.fullmatch(stored[full.sop_instance_uid]) and pattern.fullmatch(stored[fast.sop_instance_uid])
    assert study_row.last_received_at == b.received_at
    assert (study_row.quiet_deadline - study_row.last_received_at).total_seconds() == 45.0


def test_the_fast_path_writes_nothing_where_the_full_path_must(repository: Repository) -> None:
    """On SQLite (three statements) and PostgreSQL (one): an unknown series, a series given with
    another study's UID, and a study no longer receiving each leave every row as it was."""
    study, series = "1.2.826.0.1.3680043.99.21", "1.2.826.0.1.3680043.99.22"
    repository.record_instance(_record(study, series, 1), quiet_period_s=30, hard_cap_s=3600)

    def snapshot() -> tuple[object, ...]:
        with repository.db.session() as s:
            row = s.scalars(select(Study)).one()
            return (s.scalar(select(func.count()).select_from(Instance)), row.state, row.last_received_at,
                    row.quiet_deadline, row.calling_ae)

    before = snapshot()
    unknown_series = _record(study, "1.2.826.0.1.3680043.99.23", 2)
    other_study = _record("1.2.826.0.1.3680043.99.24", series, 3)
    assert repository._write_known_study([_KnownStudyItem(unknown_series, 10.0),
                                          _KnownStudyItem(other_study, 10.0)]) == [None, None]
    assert snapshot() == before
    repository.complete_study(study)
    completed = snapshot()
    assert repository._write_known_study([_KnownStudyItem(_record(study, series, 4), 10.0)]) == [None]
    assert snapshot() == completed
