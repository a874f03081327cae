"""What the tasks do: analyse a completed study, send its results. Thin, idempotent, by job id.

The Celery tasks and the embedded runner call these bodies through :func:`run_step` with a
:class:`WorkerContext` (one per process: database engine, rules, lazily loaded models). Each step
checks the job's state first, so a redelivered or repeated task finishes the job once and writes no
duplicate: SR and SC UIDs are deterministic, predictions are replaced, not added.

A body fails in one of two ways: :class:`~worker.errors.TransientError` (the database, broker or a
destination is unavailable; the caller waits and tries again, see :mod:`worker.retry`) or
:class:`~worker.errors.PermanentError` (the job is parked as failed with the reason).
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from db.queries import JobStudy, instance_paths, job_study
from db.repository import Repository
from db.runtime import Runtime
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from db.vocabulary import AnalysisOutcome, SendState, Severity
from models.architectures import default_registry
from models.artifact import Artifact, resolve_artifact
from models.inference import Classifier
from node.metrics import AuditWatch, Metrics, Step
from node.settings import NodeSettings
from worker.analysis import AnalysisResult, analyse_study
from worker.dicomweb import WebService
from worker.errors import PermanentError, TransientError
from worker.grouping import Rules, load_rules
from worker.grouping.matching import group_study
from worker.grouping.series_info import scan_studies
from worker.results.algorithm import algorithm_for
from worker.results.identity import device_uid
from worker.results.outcome import SendOutcome
from worker.results.stow import WebDestination
from worker.results.writeback import Destination, send_to
from worker.retry import ONLY_ATTEMPT, Attempt
from worker.roi import RoiSource, annotation_files
from worker.settings import DestinationKind, DestinationSettings, GroupingSettings, ModelsSection, WorkerSettings

log = logging.getLogger(__name__)

DONE_STATES = {JobState.ANALYSED, JobState.SENT, JobState.SHADOWED, JobState.SKIPPED, JobState.FAILED}

NO_ANNOTATION = ("no lesion annotation (SEG, RTSTRUCT or SR) in the study, and its sender requires one "
                 "([[node.peers]] require_annotation): not analysed on a centre-crop guess")

TRANSIENT_CAUSES: tuple[type[Exception], ...] = (OperationalError, PoolTimeout, ConnectionError, TimeoutError)
"""Failures of the database or the network that a later attempt may not meet."""

PARK_FAILURES: tuple[type[Exception], ...] = (*TRANSIENT_CAUSES, LookupError, ValueError)
"""Why parking a job may fail: the database is down, the job is gone, or it already finished."""


class NoModelError(PermanentError, LookupError):
    """No model is configured for a study's task: trying again cannot help, so the job is skipped."""


def _destination(settings: DestinationSettings) -> Destination | WebDestination:
    if settings.kind is DestinationKind.DICOMWEB and settings.url:
        ca_bundle = str(settings.tls_ca_file) if settings.tls_ca_file else None
        return WebDestination(settings.name, WebService(settings.url, settings.token, ca_bundle), settings.shadow)
    tls_files = (settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file)
    return Destination(settings.name, settings.ae_title or "", settings.host or "", settings.port or 0,
                       settings.shadow, settings.tls, *(str(path) if path else None for path in tls_files))


@dataclass
class WorkerContext:
    """What a worker process needs for every job: built once per process, models loaded on first use."""

    repository: Repository
    rules: Rules
    spool_root: Path
    results_root: Path
    destinations: list[Destination | WebDestination]
    models: dict[str, str]
    calling_ae: str
    data_dir: Path
    models_dir: Path
    device: str = "auto"
    metrics: Metrics = field(default_factory=Metrics)
    _loaded: dict[str, tuple[Artifact, Classifier]] = field(default_factory=dict)

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> WorkerContext:
        worker = runtime.section(WorkerSettings)
        node = runtime.section(NodeSettings)
        general = runtime.general
        metrics = Metrics()
        AuditWatch(runtime.database(), metrics).start()  # job and send counts, as committed by this process
        return cls(
            metrics=metrics, repository=Repository(runtime.database()),
            rules=load_rules(runtime.section(GroupingSettings).rules),
            spool_root=node.spool_dir or general.spool_dir, results_root=general.data_dir / "results",
            destinations=[_destination(d) for d in worker.destinations],
            models=dict(worker.models), calling_ae=node.ae_title, data_dir=general.data_dir,
            models_dir=general.models_dir, device=runtime.section(ModelsSection).device,
        )

    def classifier_for(self, task: str) -> tuple[Artifact, Classifier]:
        """(artifact, classifier) for a task, loaded once per process."""
        if task not in self._loaded:
            reference = self.models.get(task)
            if not reference:
                raise NoModelError(f"no model configured for task {task} ([worker.models] {task} = MODEL)")
            artifact = resolve_artifact(reference, self.models_dir)
            self._loaded[task] = (artifact, Classifier(artifact, registry=default_registry(), device=self.device))
        return self._loaded[task]


TaskBody = Callable[[WorkerContext, int, Attempt], JobState]


def _job(ctx: WorkerContext, job_id: int) -> JobStudy:
    job = job_study(ctx.repository.db, job_id)
    if job is None:
        raise PermanentError(f"no job {job_id}")
    return job


def _start(ctx: WorkerContext, job_id: int, state: JobState) -> None:
    if state is JobState.READY:
        ctx.repository.transition_job(job_id, JobState.QUEUED)
        state = JobState.QUEUED
    if state is JobState.QUEUED:
        ctx.repository.transition_job(job_id, JobState.RUNNING)


def _finish(ctx: WorkerContext, job_id: int, state: JobState, reason: str | None, **detail: object) -> JobState:
    ctx.repository.transition_job(job_id, state, reason=reason, **detail)
    return state


def _write_results(folder: Path, result: AnalysisResult) -> None:
    """The SR and one SC per lesion, swapped into ``folder`` whole (a repeat replaces it)."""
    if result.sr is None:
        raise PermanentError(f"the analysis of {result.study_uid} produced no SR")
    staging = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    result.sr.save_as(staging / "SR.dcm", enforce_file_format=True)
    for sc, lesion in zip(result.scs, result.lesions, strict=True):
        sc.save_as(staging / f"SC_{lesion.lesion_id}.dcm", enforce_file_format=True)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)


def run_analyse(ctx: WorkerContext, job_id: int, attempt: Attempt = ONLY_ATTEMPT) -> JobState:
    """Group, composite, classify; write SR + SC to the job's results folder; queue the send."""
    job = _job(ctx, job_id)
    if JobState(job.state) in DONE_STATES:
        return JobState(job.state)  # a repeated delivery: the work is done
    _start(ctx, job_id, JobState(job.state))
    scan = scan_studies([ctx.spool_root / p for p in instance_paths(ctx.repository.db, job.study_uid).values()])
    series = scan.series.get(job.study_uid, [])
    if not series:
        raise PermanentError("the study's files are missing from the spool")
    grouping = group_study(job.study_uid, series, ctx.rules)  # once: the analysis reuses it
    task = grouping.task
    if task is None:
        return _finish(ctx, job_id, JobState.SKIPPED, "not applicable: no CT or MR task for this study")
    if job.annotation_required and not any(annotation_files(series).values()):
        return _finish(ctx, job_id, JobState.SKIPPED, NO_ANNOTATION)
    try:
        artifact, classifier = ctx.classifier_for(task)
    except NoModelError as exc:
        return _finish(ctx, job_id, JobState.SKIPPED, str(exc))
    result = analyse_study(job.study_uid, series, ctx.rules, classifier=classifier,
                           algorithm=algorithm_for(artifact), device_uid=device_uid(ctx.data_dir), grouping=grouping)
    if result.outcome is AnalysisOutcome.SKIPPED:
        return _finish(ctx, job_id, JobState.SKIPPED, result.reason, roles=result.roles)
    if job.annotation_required and any(p.roi_source == RoiSource.FALLBACK_CENTRE for p in result.lesions):
        return _finish(ctx, job_id, JobState.SKIPPED, NO_ANNOTATION + " (no lesion found in its annotation)",
                       roles=result.roles)
    _write_results(ctx.results_root / str(job_id), result)
    ctx.repository.record_analysis(job_id, task=task, model=artifact.hash, lesions=result.lesions,
                                   detail={"roles": result.roles}, enqueue_send=True)
    return JobState.ANALYSED


def _not_sending(ctx: WorkerContext, job: JobStudy) -> JobState | None:
    """Shadowed (a shadow job, or no active destination), or None when the results go out."""
    if job.shadow:
        return _finish(ctx, job.job_id, JobState.SHADOWED,
                       "shadow run (peer or batch): analysed and audited, nothing sent")
    if not any(not d.shadow for d in ctx.destinations):
        return _finish(ctx, job.job_id, JobState.SHADOWED, "no destination configured (shadow mode): nothing sent")
    return None


def _audit_sends(ctx: WorkerContext, job: JobStudy, outcomes: Sequence[SendOutcome], count: int) -> None:
    for outcome in outcomes:
        sent = outcome.state is SendState.SENT
        ctx.repository.audit(f"send.{outcome.state}", outcome.reason or f"{count} objects to {outcome.destination}",
                             severity=Severity.INFO if sent else Severity.ERROR, study_uid=job.study_uid,
                             job_id=job.job_id, detail=outcome.as_json())


def run_send(ctx: WorkerContext, job_id: int, attempt: Attempt = ONLY_ATTEMPT) -> JobState:
    """Send the job's SR and SC to every destination once; sent, shadowed, failed (parked), or try again.

    A transient failure raises :class:`TransientError` unless ``attempt`` is the last; then it is
    audited and the job parked like a permanent one.
    """
    job = _job(ctx, job_id)
    state = JobState(job.state)
    if state in (JobState.SENT, JobState.SHADOWED, JobState.SKIPPED):
        return state
    if state is JobState.QUEUED:  # a resend: the results on disk are reused
        ctx.repository.transition_job(job_id, JobState.RUNNING, reason="resend: results on disk reused")
        ctx.repository.transition_job(job_id, JobState.ANALYSED, reason="resend: results on disk reused")
    elif state is not JobState.ANALYSED:
        return state
    files = sorted((ctx.results_root / str(job_id)).glob("*.dcm"))
    if not files:
        raise PermanentError("no results on disk; analyse the study again")
    shadowed = _not_sending(ctx, job)
    if shadowed is not None:
        return shadowed
    active = [d for d in ctx.destinations if not d.shadow]
    outcomes = [send_to(d, files, calling_ae=ctx.calling_ae, attempt=attempt) for d in active]
    if not attempt.last and any(o.transient for o in outcomes):
        raise TransientError("; ".join(o.reason or o.destination for o in outcomes if o.transient))
    _audit_sends(ctx, job, outcomes, len(files))
    failures = [o.reason or o.destination for o in outcomes if o.state is not SendState.SENT]
    if failures:
        return _finish(ctx, job_id, JobState.FAILED, "; ".join(failures))
    return _finish(ctx, job_id, JobState.SENT, f"sent to {', '.join(d.name for d in active)}")


TASK_BODIES: Mapping[str, TaskBody] = {ANALYSE_TASK: run_analyse, SEND_TASK: run_send}
TASK_STEPS: Mapping[str, Step] = {ANALYSE_TASK: Step.ANALYSE, SEND_TASK: Step.SEND}


def park(ctx: WorkerContext, job_id: int, reason: str) -> JobState:
    """Move the job to failed with ``reason``; if even that fails, say so in the log."""
    try:
        ctx.repository.transition_job(job_id, JobState.FAILED, reason=reason)
    except PARK_FAILURES:
        log.exception("could not park job #%d", job_id)
    return JobState.FAILED


def _classified(task_name: str, ctx: WorkerContext, job_id: int, attempt: Attempt) -> JobState:
    """The body's result; any failure leaves as a TransientError or a PermanentError."""
    try:
        with ctx.metrics.timed(TASK_STEPS[task_name]):
            return TASK_BODIES[task_name](ctx, job_id, attempt)
    except (TransientError, PermanentError):
        raise
    except TRANSIENT_CAUSES as exc:
        raise TransientError(f"{task_name}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        log.exception("job #%d: %s failed", job_id, task_name)
        raise PermanentError(f"{task_name}: {type(exc).__name__}: {exc}") from exc


def run_step(task_name: str, ctx: WorkerContext, job_id: int, attempt: Attempt = ONLY_ATTEMPT) -> JobState:
    """Run one task body once: the failure path every runner shares.

    A transient failure propagates while attempts remain (the caller waits, then calls again with
    the next attempt); on the last attempt it parks the job, as any permanent failure does.
    """
    try:
        return _classified(task_name, ctx, job_id, attempt)
    except TransientError as exc:
        if not attempt.last:
            raise
        return park(ctx, job_id, f"{exc} (gave up after {attempt.number} attempts)")
    except PermanentError as exc:
        return park(ctx, job_id, str(exc))
