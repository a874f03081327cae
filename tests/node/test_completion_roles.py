"""Completion by content: a whole study completes by its roles, a half one waits, the SEG is awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from db.engine import Database
from db.queries import list_studies
from db.schema import Job, OutboxEntry
from node.scu import RemoteNode, SendResult, scan, send
from node.settings import PeerSettings
from tests.node.conftest import NodeFactory, RunningNode
from worker.grouping import load_rules
from worker.grouping.readiness import GroupingRoleCheck
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

QUIET_S = 30.0
SETTLE_S = 0.5


@pytest.fixture(scope="module")
def study_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """One synthetic 4-phase CT study in three parts: images before the delayed phase, the rest
    of the images, and the SEG."""
    out = tmp_path_factory.mktemp("whole")
    generate_run(out, StudyOptions(task="ct-histology", seed=5, difficulty=0.3, style="siemens", slices=8,
                                   matrix=32), 1, [])
    files = sorted(next(out.glob("study-*")).rglob("*.dcm"))
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in files}
    delayed = min(int(ds.SeriesNumber) for ds in headers.values() if "delay" in str(ds.SeriesDescription).lower())
    parts: dict[str, list[Path]] = {"first": [], "rest": [], "seg": []}
    for path, ds in headers.items():
        part = "seg" if ds.Modality == "SEG" else "first" if int(ds.SeriesNumber) < delayed else "rest"
        parts[part].append(path)
    return parts


def _node(start_node: NodeFactory, database: Database, *, require_annotation: bool = True,
          quiet_period_s: float = QUIET_S) -> RunningNode:
    peer = PeerSettings(name="pacs", ae_title="PACS", require_annotation=require_annotation)
    return start_node(database, role_check=GroupingRoleCheck(load_rules()), quiet_period_s=quiet_period_s,
                      settle_s=SETTLE_S, peers=(peer,))


def _send(running: RunningNode, paths: list[Path]) -> float:
    result = SendResult()
    send(scan(paths, result), RemoteNode("TRIPHASE", "127.0.0.1", running.port), calling_ae="PACS", result=result)
    assert result.ok and len(result.sent) == len(paths)
    return time.monotonic()


def _wait(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _stays_receiving(running: RunningNode, seconds: float) -> None:
    time.sleep(seconds)
    assert running.dispatcher.completed == []
    assert [s.state for s in list_studies(running.database)] == ["receiving"]


def test_a_whole_study_completes_by_roles_well_before_the_quiet_period(
        start_node: NodeFactory, sqlite_database: Database, study_parts: dict[str, list[Path]]) -> None:
    running = _node(start_node, sqlite_database)
    sent = _send(running, study_parts["first"] + study_parts["rest"] + study_parts["seg"])
    completed = _wait(lambda: bool(running.dispatcher.completed), timeout=QUIET_S / 2)
    [done] = running.dispatcher.completed
    assert done.completed_by == "roles" and done.skipped is None
    assert completed - sent < 10.0  # settle period + one role check, not the 30 s quiet period
    [summary] = list_studies(sqlite_database)
    assert (summary.completed_by, summary.latest_job_state) == ("roles", "ready")
    with sqlite_database.session() as session:
        assert session.scalars(select(Job.annotation_required)).all() == [True]


def test_a_sender_pausing_half_way_gets_no_job_for_the_half_study(
        start_node: NodeFactory, sqlite_database: Database, study_parts: dict[str, list[Path]]) -> None:
    running = _node(start_node, sqlite_database)
    _send(running, study_parts["first"])
    _stays_receiving(running, SETTLE_S * 6)  # settled, but the delayed phase is missing
    _send(running, study_parts["rest"] + study_parts["seg"])
    _wait(lambda: bool(running.dispatcher.completed), timeout=QUIET_S / 2)
    [done] = running.dispatcher.completed
    assert (done.completed_by, done.revision) == ("roles", 1)


def test_a_half_study_completed_by_the_quiet_period_is_skipped_naming_its_missing_roles(
        start_node: NodeFactory, sqlite_database: Database, study_parts: dict[str, list[Path]]) -> None:
    running = _node(start_node, sqlite_database, quiet_period_s=2.0)
    _send(running, study_parts["first"] + study_parts["seg"])
    _wait(lambda: bool(running.dispatcher.completed), timeout=20)
    [done] = running.dispatcher.completed
    assert done.completed_by == "quiet" and done.skipped is not None and "delayed" in done.skipped
    with sqlite_database.session() as session:
        assert session.scalars(select(Job.state)).all() == ["skipped"]
        assert session.scalars(select(OutboxEntry)).all() == []  # never analysed


def test_the_seg_arriving_after_the_images_is_waited_for_when_the_peer_requires_it(
        start_node: NodeFactory, sqlite_database: Database, study_parts: dict[str, list[Path]]) -> None:
    running = _node(start_node, sqlite_database)
    _send(running, study_parts["first"] + study_parts["rest"])
    _stays_receiving(running, SETTLE_S * 6)
    _send(running, study_parts["seg"])
    _wait(lambda: bool(running.dispatcher.completed), timeout=QUIET_S / 2)
    [done] = running.dispatcher.completed
    assert (done.completed_by, done.revision) == ("roles", 1)


def test_without_require_annotation_the_images_alone_complete_the_study(
        start_node: NodeFactory, sqlite_database: Database, study_parts: dict[str, list[Path]]) -> None:
    running = _node(start_node, sqlite_database, require_annotation=False)
    _send(running, study_parts["first"] + study_parts["rest"])
    _wait(lambda: bool(running.dispatcher.completed), timeout=QUIET_S / 2)
    [done] = running.dispatcher.completed
    assert done.completed_by == "roles"
    with sqlite_database.session() as session:
        assert session.scalars(select(Job.annotation_required)).all() == [False]
