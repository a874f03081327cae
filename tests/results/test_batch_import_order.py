"""A batch import queues each study as soon as its own files are in, wherever they lie."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from db.engine import Database
from db.migrate import upgrade
from db.repository import Repository
from db.schema import Instance, Job, Series, Study
from node.spool import Spool
from tests.factories import write_study
from worker.batch import import_folder


def test_each_study_is_queued_once_its_files_are_in_before_the_next_is_stored(tmp_path: Path) -> None:
    first, first_files = write_study(tmp_path / "a", series=2, per_series=2, size=16)
    second, _ = write_study(tmp_path / "b", series=1, per_series=3, size=16)
    straggler = tmp_path / "b" / "z_first_study.dcm"  # one file of the first study among the second's
    first_files[-1].rename(straggler)
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}")
    upgrade(database)
    seen: list[tuple[int, dict[str, int], set[str]]] = []

    def snapshot(done: int, total: int) -> None:
        with database.session() as s:
            stored = dict(s.execute(select(Study.study_uid, func.count(Instance.id))
                                    .join(Series, Series.study_id == Study.id)
                                    .join(Instance, Instance.series_id == Series.id).group_by(Study.study_uid)).all())
        seen.append((done, stored, queued(database)))

    try:
        summary = import_folder([tmp_path / "a", tmp_path / "b"], Spool(tmp_path / "spool"),
                                Repository(database), progress=snapshot)
        assert queued(database) == {first, second}
    finally:
        database.close()
    assert summary.stored == 7 and summary.studies_queued == [first, second] and not summary.unreadable
    for _done, stored, in_queue in seen:
        if first in in_queue or second in in_queue:
            assert stored.get(first) == 4  # queued only with all its files, the straggler included
        if stored.get(second):
            assert first in in_queue  # and before the next study's first file was stored
    assert [done for done, _, _ in seen] == list(range(1, 8))


def queued(database: Database) -> set[str]:
    with database.session() as s:
        return set(s.scalars(select(Study.study_uid).join(Job, Job.study_id == Study.id)))
