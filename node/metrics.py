"""Prometheus metrics of the node and the worker: what arrived, what was refused, where jobs went.

Each process (``triphase node``, ``triphase worker``) exposes its own ``/metrics``; Prometheus adds
them up. Two sources feed the counters:

- the DICOM edge counts what it answers (instances stored and refused by status, associations by
  how they ended) at the moment it answers, so the counts hold even while the database is down;
- durable state changes (a job's state, a study's completion and its reason, a send's result per
  destination) are counted from the audit events *committed* in this process (:class:`AuditWatch`,
  a SQLAlchemy session listener): every such change already writes exactly one event in its own
  transaction, so no code path can change a job without the metric seeing it, and a rolled-back
  change is never counted.

Durations are histograms of ``triphase_step_seconds{step}``: receive (first instance of a revision
to completion), analyse and send (one run of the task body).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, values
from prometheus_client.context_managers import Timer
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, UOWTransaction

from db.engine import Database
from db.queries import revision_spans, unpublished_outbox_count
from db.repository import CompletedStudy
from db.schema import AuditEvent
from db.states import JobState
from db.vocabulary import AssociationResult, CompletedBy
from node.dispatch import JobDispatcher

log = logging.getLogger(__name__)

PREFIX = "triphase"
# From a tenth of a second (a send to a PACS next door) to two hours (a study arriving slowly).
STEP_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_PENDING = "triphase_audit_events"


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_values(directory: Path) -> None:
    """Make every metric created from now on (here and in forked children) write to ``directory``.

    prometheus-client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when it is first imported; in this
    process the node's modules imported it before the process knew it would have children, so its
    choice of value class is made again here, the way prometheus-client's own tests switch modes.
    Spawned children inherit the variable and choose the same class when they import it.
    """
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped in prometheus-client


@dataclass
class SharedMetrics:
    """``/metrics`` for a node with several receiving processes: each process writes its counters to
    a private directory (0700, made fresh for each run, removed at exit) and the first one serves
    their sum, with the queue depths."""

    directory: Path
    registry: CollectorRegistry

    @classmethod
    def create(cls, data_dir: Path, database: Database) -> SharedMetrics:
        """Call before any counter is created (the node's, and before receivers are started)."""
        directory = Path(tempfile.mkdtemp(prefix="metrics-", dir=data_dir))
        use_multiprocess_values(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]  # untyped
        registry.register(QueueDepth.reading(database))
        return cls(directory, registry)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Step(StrEnum):
    """The ``step`` label of ``triphase_step_seconds``."""

    RECEIVE = "receive"  # first instance of a study revision -> the revision completed
    ANALYSE = "analyse"  # one run of the analysis task
    SEND = "send"  # one run of the send task (every destination)


class Metrics:
    """The counters and histograms of one process, on a registry of their own (tests run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        on = self.registry
        self.instances_stored = Counter(f"{PREFIX}_instances_stored", "Instances stored and answered success",
                                        registry=on)
        self.instances_refused = Counter(f"{PREFIX}_instances_refused", "Instances refused, by C-STORE status",
                                         ["status"], registry=on)
        self.associations = Counter(f"{PREFIX}_associations", "Associations by how they ended", ["result"], registry=on)
        self.studies_completed = Counter(f"{PREFIX}_studies_completed", "Study revisions completed, by reason",
                                         ["reason"], registry=on)
        self.jobs = Counter(f"{PREFIX}_jobs", "Job state transitions, by the state entered", ["state"], registry=on)
        self.sends = Counter(f"{PREFIX}_sends", "Results sent per destination, by outcome",
                             ["destination", "result"], registry=on)
        self.step_seconds = Histogram(f"{PREFIX}_step_seconds", "Duration of a pipeline step", ["step"],
                                      buckets=STEP_BUCKETS, registry=on)

    def stored(self) -> None:
        self.instances_stored.inc()

    def refused(self, status: int) -> None:
        self.instances_refused.labels(status=f"0x{status:04X}").inc()

    def association(self, result: AssociationResult) -> None:
        self.associations.labels(result=result.value).inc()

    def step(self, step: Step, seconds: float) -> None:
        self.step_seconds.labels(step=step.value).observe(max(seconds, 0.0))

    def timed(self, step: Step) -> Timer:
        """A context manager that observes how long its block took (failures included)."""
        return self.step_seconds.labels(step=step.value).time()

    def count_event(self, kind: str, detail: Mapping[str, Any] | None) -> None:
        """Count one committed audit event, if it is one of the state changes counted here."""
        detail = detail or {}
        family, _, name = kind.partition(".")
        if family == "job":
            state = JobState.QUEUED.value if name == "resend" else name
            if state in JobState.__members__.values():
                self.jobs.labels(state=state).inc()
        elif kind == "study.complete" and detail.get("by") in CompletedBy.__members__.values():
            self.studies_completed.labels(reason=str(detail["by"])).inc()
        elif family == "send" and "destination" in detail:
            self.sends.labels(destination=str(detail["destination"]), result=name).inc()


class AuditWatch:
    """Counts the audit events committed through one database's sessions into :class:`Metrics`.

    Events are collected when they are flushed and counted only after the transaction commits.
    """

    def __init__(self, database: Database, metrics: Metrics) -> None:
        self.database = database
        self.metrics = metrics
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("after_flush", self._flushed), ("after_commit", self._committed),
            ("after_soft_rollback", self._rolled_back),
        ]

    def start(self) -> AuditWatch:
        for name, listener in self._listeners:
            event.listen(Session, name, listener)
        return self

    def stop(self) -> None:
        for name, listener in self._listeners:
            if event.contains(Session, name, listener):
                event.remove(Session, name, listener)

    def _ours(self, session: Session) -> bool:
        return session.bind is self.database.engine

    def _flushed(self, session: Session, _context: UOWTransaction) -> None:
        if self._ours(session):
            added = [(e.kind, e.detail) for e in session.new if isinstance(e, AuditEvent)]
            session.info.setdefault(_PENDING, []).extend(added)

    def _committed(self, session: Session) -> None:
        if self._ours(session):
            for kind, detail in session.info.pop(_PENDING, []):
                self.metrics.count_event(kind, detail)

    def _rolled_back(self, session: Session, _previous: object) -> None:
        if self._ours(session):
            session.info.pop(_PENDING, None)


class TimedDispatcher:
    """Observes how long each study revision took to arrive (first instance to completion), then
    hands the completed studies on to the node's dispatcher."""

    def __init__(self, inner: JobDispatcher, database: Database, metrics: Metrics) -> None:
        self.inner, self.database, self.metrics = inner, database, metrics

    def dispatch(self, completed: Sequence[CompletedStudy]) -> None:
        try:
            spans = revision_spans(self.database, [study.study_id for study in completed])
        except SQLAlchemyError:  # a metric never stands in the way of a completed study
            log.warning("could not read the arrival times of %d completed studies", len(completed))
            spans = []
        for start, end in spans:
            seconds = seconds_between(start, end)
            if seconds is not None:
                self.metrics.step(Step.RECEIVE, seconds)
        self.inner.dispatch(completed)


class QueueDepth(Collector):
    """``triphase_queue_depth{queue}`` read when scraped: the outbox's unpublished rows, and any
    further queues ``extra()`` reports (the broker's, in the worker).

    ``outbox()`` gives the count, or None when it is not known; the node counts in its own
    database (:meth:`reading`), the worker's parent, which keeps no database connection, shows what
    its sweeper process last counted.
    """

    def __init__(self, outbox: Callable[[], int | None],
                 extra: Callable[[], Iterable[tuple[str, int]]] | None = None) -> None:
        self.outbox = outbox
        self.extra = extra

    @classmethod
    def reading(cls, database: Database) -> QueueDepth:
        """The outbox counted in ``database`` at each scrape."""
        return cls(lambda: unpublished_outbox_count(database))

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Tasks waiting: outbox rows not yet published, "
                                   "and messages in the broker's queues", labels=["queue"])
        try:
            depth = self.outbox()
        except SQLAlchemyError:  # the database is down: the scrape still answers, without this sample
            log.warning("queue depth: the outbox could not be read")
            depth = None
        if depth is not None:
            family.add_metric(["outbox"], depth)
        for queue, depth_of_queue in self.extra() if self.extra else ():
            family.add_metric([queue], depth_of_queue)
        yield family


class MetricsServer:
    """prometheus-client's HTTP server for ``/metrics`` on one address and port, stopped with the process."""

    def __init__(self, registry: CollectorRegistry, bind: str, port: int) -> None:
        self.registry, self.bind, self.port = registry, bind, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        self._server, self._thread = start_http_server(self.port, addr=self.bind, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", self.bind, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def seconds_between(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    """``end - start`` in seconds, naive datetimes read as UTC (SQLite returns them so)."""
    if start is None or end is None:
        return None
    aware = [t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC) for t in (start, end)]
    return (aware[1] - aware[0]).total_seconds()
