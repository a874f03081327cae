"""A small model trained in the test session, and synthetic studies to analyse with it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from models.architectures import default_registry
from models.artifact import Artifact, save_trained
from models.inference import Classifier
from models.training import TrainingConfig, train_model
from worker.composite_folder import load_study_folder
from worker.synth.context import StudyOptions
from worker.synth.run import generate_run

SIZES = {"ct-histology": dict(slices=16, matrix=48), "mri-ehcc": dict(slices=8, matrix=40)}
STUDIES = {"ct-histology": 20, "mri-ehcc": 10}
CLASSES = {"ct-histology": ["early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"],
           "mri-ehcc": ["early_hcc", "progressed_hcc"]}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """task -> (studies folder, artifact, classifier); the model is a tiny network, random init."""
    cache: dict[str, tuple[Path, Artifact, Classifier]] = {}

    def get(task: str) -> tuple[Path, Artifact, Classifier]:
        if task not in cache:
            root = tmp_path_factory.mktemp(task)
            studies = root / "studies"
            generate_run(studies, StudyOptions(task=task, seed=51, difficulty=0.2, style="mixed", extras=True,
                                               balanced=True, **SIZES[task]), STUDIES[task], [])
            folder = load_study_folder(studies, size=64)
            config = TrainingConfig(architecture="tinycnn", mode="finetune", folds=2, epochs=1, seed=0,
                                    random_init=True, device="cpu")
            model = train_model(folder.images, folder.labels, folder.patient_ids, classes=CLASSES[task],
                                config=config, registry=default_registry(), weights_dir=root)
            artifact = save_trained(model, root / "models", task=task,
                                    channel_recipe=folder.provenance["channel_recipe"],
                                    windowing=folder.provenance["windowing"])
            cache[task] = (studies, artifact, Classifier(artifact, registry=default_registry(), device="cpu"))
        return cache[task]

    return get


@pytest.fixture
def result_files(trained, tmp_path: Path) -> tuple[Path, list[Path], str]:
    """The SR and SCs of the first synthetic CT study, as files, with its source folder and UID."""
    from tests.results.test_sr_sc import analyse_first

    studies, artifact, classifier = trained("ct-histology")
    result = analyse_first(studies, classifier, artifact, tmp_path)
    assert result.sr is not None
    files = [tmp_path / "SR.dcm"]
    result.sr.save_as(files[0], enforce_file_format=True)
    for number, sc in enumerate(result.scs):
        files.append(tmp_path / f"SC{number}.dcm")
        sc.save_as(files[-1], enforce_file_format=True)
    return sorted(studies.glob("study-*"))[0], files, result.study_uid


def pipeline_node(folder: Path, *, broker_url: str, artifact: Artifact, task: str, destination: tuple[str, int],
                  sender: str, **node_settings: object) -> Any:
    """A node process configured with a broker, a model for ``task`` and one destination."""
    from tests.processes import NodeProcess

    node = NodeProcess(folder, peers=[{"name": "sender", "ae_title": sender}])
    node.publish = True
    # Whole synthetic studies complete by their roles a second after the last instance; the quiet
    # period is only the fallback (a short one would complete a study Orthanc is still sending).
    node.extra_node = {"quiet_period_s": 30.0, "settle_s": 1.0, "completion_poll_s": 0.2, **node_settings}
    broker = {k: v for k, v in node_settings.items() if k == "visibility_timeout_s"}
    node.extra_node.pop("visibility_timeout_s", None)
    node.extra_toml = (f'[broker]\nurl = "{broker_url}"\n'
                       + "".join(f"{k} = {v}\n" for k, v in broker.items())
                       + f'[worker.models]\n"{task}" = "{artifact.path}"\n'
                       f'[[worker.destinations]]\nname = "pacs"\nae_title = "{destination[0]}"\n'
                       f'host = "127.0.0.1"\nport = {destination[1]}\n')
    return node


def start_worker(node: Any, log_path: Path, *, concurrency: int = 1, sweep_s: float = 1.0) -> subprocess.Popen:
    from tests.processes import TRIPHASE

    log = log_path.open("ab")
    return subprocess.Popen([TRIPHASE, "worker", "--concurrency", str(concurrency), "--sweep-s", str(sweep_s)],
                            env=node.env(), stdout=log, stderr=log)


def stop_worker(worker: subprocess.Popen) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(timeout=10)


def wait_for_job_state(database: Any, states: set[str], timeout: float, poll_s: float = 0.05) -> str | None:
    """The first job's state once it is one of ``states`` (or whatever it is at the deadline)."""
    import time

    from sqlalchemy import select

    from db.schema import Job

    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        with database.session() as session:
            state = session.scalars(select(Job.state)).first()
        if state in states:
            return state
        time.sleep(poll_s)
    return state


@dataclass
class Pipeline:
    """One test's private Redis, folder-store PACS and node (started by the test, which may set it
    up further first), the node's audit database, and the workers the test started."""

    folder: Path
    broker: Any  # tests.results.test_broker_outage.PrivateRedis
    pacs: Any  # node.folder_store.FolderStore
    node: Any  # tests.processes.NodeProcess
    workers: list[subprocess.Popen] = field(default_factory=list)
    _database: Any = None

    @property
    def database(self) -> Any:
        """The node's audit database (opened once the node has created it)."""
        if self._database is None:
            from db.engine import Database

            self._database = Database(f"sqlite:///{self.node.data_dir / 'triphase.db'}")
        return self._database

    @property
    def worker_log(self) -> Path:
        return self.folder / "worker.log"

    def start_worker(self, *, concurrency: int = 1, sweep_s: float = 1.0) -> subprocess.Popen:
        worker = start_worker(self.node, self.worker_log, concurrency=concurrency, sweep_s=sweep_s)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
        for worker in self.workers:
            if worker.poll() is None:
                stop_worker(worker)
        self.node.kill()
        self.pacs.stop()
        self.broker.kill()


@contextlib.contextmanager
def pipeline(folder: Path, artifact: Artifact, task: str = "ct-histology", **node_settings: object
             ) -> Iterator[Pipeline]:
    """A node that publishes to a private Redis and sends ``task``'s results to a folder-store PACS;
    everything (workers included) is stopped afterwards, whatever the test did."""
    from node.folder_store import FolderStore
    from tests.results.test_broker_outage import PrivateRedis

    broker = PrivateRedis(folder)
    broker.start()
    pacs = FolderStore(folder / "pacs").start()
    node = pipeline_node(folder / "node", broker_url=f"redis://127.0.0.1:{broker.port}/0", artifact=artifact,
                         task=task, destination=("DEMOPACS", pacs.port), sender="SENDER", **node_settings)
    rig = Pipeline(folder, broker, pacs, node)
    try:
        yield rig
    finally:
        rig.close()
