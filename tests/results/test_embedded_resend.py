"""The embedded runner takes a batch-imported study through analysis and sending; `resend` sends
the same objects again (replacing, never duplicating)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.engine import Database
from db.migrate import upgrade
from db.queries import audit_events
from db.repository import Repository
from db.schema import Job, Prediction
from node.folder_store import FolderStore
from node.spool import Spool
from worker.batch import import_folder
from worker.embedded import OutboxRunner
from worker.grouping import load_rules
from worker.jobs import WorkerContext
from worker.results.writeback import Destination


def _embedded(tmp_path: Path, artifact: object, pacs: FolderStore) -> tuple[Database, Repository, Spool, OutboxRunner]:
    """A database, spool and embedded runner sending to ``pacs`` (plus a shadow destination)."""
    database = Database(f"sqlite:///{tmp_path / 'triphase.db'}")
    upgrade(database)
    repository = Repository(database)
    spool = Spool(tmp_path / "spool")
    context = WorkerContext(repository=repository, rules=load_rules(), spool_root=spool.root,
                            results_root=tmp_path / "results",
                            destinations=[Destination("pacs", "DEMOPACS", "127.0.0.1", pacs.port),
                                          Destination("audit-only", "X", "127.0.0.1", 1, shadow=True)],
                            models={"mri-ehcc": str(artifact.path)}, calling_ae="TRIPHASE",  # type: ignore[attr-defined]
                            data_dir=tmp_path, models_dir=tmp_path / "models", device="cpu")
    return database, repository, spool, OutboxRunner(context)


def test_batch_analyse_send_and_resend(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("mri-ehcc")
    pacs = FolderStore(tmp_path / "pacs").start()
    database, repository, spool, runner = _embedded(tmp_path, artifact, pacs)
    try:
        summary = import_folder([sorted(studies.glob("study-*"))[0]], spool, repository)
        assert len(summary.studies_queued) == 1
        assert runner.run_pending() == 1  # analyse, which queues the send
        assert runner.run_pending() == 1  # send
        with database.session() as s:
            job = s.scalars(select(Job)).one()
            assert job.state == "sent" and len(s.scalars(select(Prediction)).all()) == 1
        assert len(pacs.received) == 2
        repository.requeue_send(job.id)
        assert runner.run_pending() == 1
        with database.session() as s:
            assert s.get(Job, job.id).state == "sent"  # type: ignore[union-attr]
        assert len(pacs.received) == 4 and len(list((tmp_path / "pacs").rglob("*.dcm"))) == 2
        assert [e.kind for e in audit_events(database, kind_prefix="send.")] == ["send.sent", "send.sent"]
        assert runner.run_pending() == 0
    finally:
        pacs.stop()
        database.close()


def test_shadow_batch_is_analysed_but_not_sent(trained, tmp_path: Path) -> None:
    studies, artifact, _ = trained("mri-ehcc")
    pacs = FolderStore(tmp_path / "pacs").start()
    database, repository, spool, runner = _embedded(tmp_path, artifact, pacs)
    try:
        import_folder([sorted(studies.glob("study-*"))[1]], spool, repository, shadow=True)
        runner.run_pending()
        runner.run_pending()
        with database.session() as s:
            job = s.scalars(select(Job)).one()
            assert (job.state, job.shadow) == ("shadowed", True)
            assert len(s.scalars(select(Prediction)).all()) == 1  # analysed and audited
        assert pacs.received == []
    finally:
        pacs.stop()
        database.close()


def test_peer_shadow_setting_marks_its_studies() -> None:
    from node.settings import NodeSettings, PeerSettings

    settings = NodeSettings(peers=(PeerSettings(name="a", ae_title="TRIAL", shadow=True),
                                   PeerSettings(name="b", ae_title="PACS")))
    assert settings.shadow_for("TRIAL") and not settings.shadow_for("PACS") and not settings.shadow_for(None)
