"""The C-STORE handler reads an instance's header from the bytes the receiving thread kept in
memory, and from the stored file only when the header runs past them: either way the row holds
the data set's own attributes."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from db.engine import Database
from db.schema import Instance, Series, Study
from node.intake import HEAD_BYTES, ReceivedFile
from tests.factories import ct_dataset
from tests.node.conftest import NodeFactory
from tests.node.test_scp import store


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The received files the handler opened to read (their names)."""
    names: list[str] = []
    reader = ReceivedFile.reader

    def spy(received: ReceivedFile):  # type: ignore[no-untyped-def]
        names.append(received.name)
        return reader(received)

    monkeypatch.setattr(ReceivedFile, "reader", spy)
    return names


def _rows(database: Database) -> list[tuple[str, str, str]]:
    with database.session() as session:
        return sorted(session.execute(
            select(Instance.sop_instance_uid, Series.series_uid, Study.study_uid)
            .join(Series, Instance.series_id == Series.id).join(Study, Series.study_id == Study.id)).all())


def test_a_slice_header_is_read_from_memory(start_node: NodeFactory, sqlite_database: Database,
                                            opened: list[str]) -> None:
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    datasets = [ct_dataset(study, series, size=256) for _ in range(3)]
    assert store(running.port, datasets) == [0, 0, 0]
    assert opened == []
    assert _rows(sqlite_database) == sorted((ds.SOPInstanceUID, series, study) for ds in datasets)


def test_a_header_that_runs_past_the_head_is_read_from_the_file(start_node: NodeFactory, sqlite_database: Database,
                                                                opened: list[str]) -> None:
    """A private element larger than the head sits before the study and series UIDs."""
    running = start_node(sqlite_database)
    study, series = generate_uid(), generate_uid()
    ds = ct_dataset(study, series, size=64)
    block = ds.private_block(0x0009, "TRIPHASE TEST", create=True)
    block.add_new(0x10, "OB", b"\x01" * (HEAD_BYTES + 4096))
    assert store(running.port, [ds]) == [0]
    assert len(opened) == 1
    assert _rows(sqlite_database) == [(ds.SOPInstanceUID, series, study)]
