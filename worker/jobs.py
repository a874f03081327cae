"""What the tasks do: analyse a completed study, send its results. Thin, idempotent, by job id.

The Celery tasks and the embedded runner call these bodies through :func:`run_step` with a
:class:`WorkerContext` (one per process: database engine, rules, lazily loaded models). Each step
checks the job's state first and moves it only by compare-and-set (:mod:`db.repository.jobs`), so
a redelivered or repeated task finishes the job once and writes no duplicate: a late duplicate of a
finished step does nothing, the loser of a race leaves the winner's result (one set of
predictions), a step that finds its job held by another task tries again later, and SR and SC UIDs
are deterministic, so a repeated send replaces the same objects.

A body fails in one of two ways: :class:`~worker.errors.TransientError` (the database, broker or a
destination is unavailable; the caller waits and tries again, see :mod:`worker.retry`) or
:class:`~worker.errors.PermanentError` (the job is parked as failed with the reason).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from db.queries import JobStudy, instance_paths, job_study
from db.repository import Repository
from db.runtime import Runtime
from db.states import JobState
from db.task_names import ANALYSE_TASK, SEND_TASK
from db.transient import is_transient
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

PARK_FAILURES: tuple[type[Exception], ...] = (SQLAlchemyError, ConnectionError, TimeoutError, LookupError,
                                               ValueError, PermanentError)
"""Why parking a job may fail: the database is down or the job is gone."""


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


def _state_now(ctx: WorkerContext, job_id: int) -> JobState:
    return JobState(_job(ctx, job_id).state)


def _later(attempt: Attempt, state: JobState, why: str) -> JobState:
    """Another task holds the job: try again after the back-off, or, on the last attempt, leave it.

    Leaving it loses nothing: the other task finishes the job, its own message is redelivered if
    its worker dies, and the watchdog re-drives a job that no task holds any more.
    """
    if attempt.last:
        log.info("%s; leaving the job %s to it", why, state.value)
        return state
    raise TransientError(why)


def _take(ctx: WorkerContext, job: JobStudy, attempt: Attempt) -> JobState | None:
    """Move the job to running for this delivery; None to go on analysing, else the state to stop at.

    A job found running is a redelivery after its worker died (acks are late), and is analysed
    again; a job that another delivery takes between our read and our move is left to it.
    """
    state = JobState(job.state)
    if state is JobState.READY:  # delivered before its publisher marked it queued
        ctx.repository.transition_job(job.job_id, JobState.QUEUED, expected=JobState.READY,
                                      reason="delivered before it was marked published")
        state = JobState.QUEUED
    if state is JobState.RUNNING:
        return None
    if ctx.repository.transition_job(job.job_id, JobState.RUNNING, expected=JobState.QUEUED):
        return None
    now = _state_now(ctx, job.job_id)
    if now in (JobState.QUEUED, JobState.RUNNING):
        return _later(attempt, now, f"job #{job.job_id} is being analysed by another task")
    return now  # finished by another delivery a moment ago


def _finish(ctx: WorkerContext, job_id: int, state: JobState, reason: str | None, *,
            expected: JobState = JobState.RUNNING, **detail: object) -> JobState:
    """Move the job on from ``expected``; if another delivery moved it first, its state stands."""
    if ctx.repository.transition_job(job_id, state, expected=expected, reason=reason, **detail):
        return state
    return _state_now(ctx, job_id)


def _write_results(folder: Path, result: AnalysisResult) -> None:
    """The SR and one SC per lesion, swapped into ``folder`` whole (a repeat replaces it).

    Two deliveries of one analysis may write at once; both write the same objects (same UIDs), so
    whichever swap lands last is as good as the other, and neither fails for it.
    """
    if result.sr is None:
        raise PermanentError(f"the analysis of {result.study_uid} produced no SR")
    token = uuid.uuid4().hex[:8]
    staging = folder.with_name(f".{folder.name}-{token}")
    staging.mkdir(parents=True)
    result.sr.save_as(staging / "SR.dcm", enforce_file_format=True)
    for sc, lesion in zip(result.scs, result.lesions, strict=True):
        sc.save_as(staging / f"SC_{lesion.lesion_id}.dcm", enforce_file_format=True)
    previous = folder.with_name(f".{folder.name}-{token}-old")
    with contextlib.suppress(FileNotFoundError):
        folder.rename(previous)
    try:
        staging.rename(folder)
    except OSError:  # another delivery's results landed between the two renames: the same objects
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(previous, ignore_errors=True)


def run_analyse(ctx: WorkerContext, job_id: int, attempt: Attempt = ONLY_ATTEMPT) -> JobState:
    """Group, composite, classify; write SR + SC to the job's results folder; queue the send.

    A late duplicate (the job analysed, finished, or resent since) does nothing; a delivery that
    loses the race to record its analysis leaves the winner's predictions in place.
    """
    job = _job(ctx, job_id)
    if JobState(job.state) in DONE_STATES or job.analysed_once:
        return JobState(job.state)  # a repeated delivery: the work is done
    stop = _take(ctx, job, attempt)
    if stop is not None:
        return stop
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
    now = _state_now(ctx, job_id)
    if now is not JobState.RUNNING:
        return now  # another delivery finished it while this one computed
    _write_results(ctx.results_root / str(job_id), result)
    if not ctx.repository.record_analysis(job_id, task=task, model=artifact.hash, lesions=result.lesions,
                                          detail={"roles": result.roles}, enqueue_send=True):
        return _state_now(ctx, job_id)
    return JobState.ANALYSED


def _not_sending(ctx: WorkerContext, job: JobStudy) -> JobState | None:
    """Shadowed (a shadow job, or no active destination), or None when the results go out."""
    if job.shadow:
        return _finish(ctx, job.job_id, JobState.SHADOWED,
                       "shadow run (peer or batch): analysed and audited, nothing sent", expected=JobState.ANALYSED)
    if not any(not d.shadow for d in ctx.destinations):
        return _finish(ctx, job.job_id, JobState.SHADOWED, "no destination configured (shadow mode): nothing sent",
                       expected=JobState.ANALYSED)
    return None


def _audit_sends(ctx: WorkerContext, job: JobStudy, outcomes: Sequence[SendOutcome], count: int) -> None:
    for outcome in outcomes:
        sent = outcome.state is SendState.SENT
        ctx.repository.audit(f"send.{outcome.state}", outcome.reason or f"{count} objects to {outcome.destination}",
                             severity=Severity.INFO if sent else Severity.ERROR, study_uid=job.study_uid,
                             job_id=job.job_id, detail=outcome.as_json())


def _resume_resend(ctx: WorkerContext, job: JobStudy, attempt: Attempt) -> JobState:
    """A resent job (queued, or running on its way back): to analysed, the results on disk reused.

    Either move may have been made by another delivery of the send; what counts is where the job
    is afterwards.
    """
    reason = "resend: results on disk reused"
    if job.state == JobState.QUEUED:
        ctx.repository.transition_job(job.job_id, JobState.RUNNING, expected=JobState.QUEUED, reason=reason)
    ctx.repository.transition_job(job.job_id, JobState.ANALYSED, expected=JobState.RUNNING, reason=reason)
    now = _state_now(ctx, job.job_id)
    if now in (JobState.QUEUED, JobState.RUNNING):
        return _later(attempt, now, f"job #{job.job_id} is being resent by another task")
    return now


def run_send(ctx: WorkerContext, job_id: int, attempt: Attempt = ONLY_ATTEMPT) -> JobState:
    """Send the job's SR and SC to every destination once; sent, shadowed, failed (parked), or try again.

    A send whose job is done (sent, shadowed, skipped) or parked does nothing; one whose analysis
    is still to come tries again later (that analysis also queues a send of its own). A transient
    failure raises :class:`TransientError` unless ``attempt`` is the last; then it is audited and
    the job parked like a permanent one.
    """
    job = _job(ctx, job_id)
    state = JobState(job.state)
    if state in (JobState.SENT, JobState.SHADOWED, JobState.SKIPPED, JobState.FAILED):
        return state
    if job.waits_for_analysis:
        return _later(attempt, state, f"job #{job_id} is not analysed yet")
    if state is not JobState.ANALYSED:
        state = _resume_resend(ctx, job, attempt)
        if state is not JobState.ANALYSED:
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
        return _finish(ctx, job_id, JobState.FAILED, "; ".join(failures), expected=JobState.ANALYSED)
    return _finish(ctx, job_id, JobState.SENT, f"sent to {', '.join(d.name for d in active)}",
                   expected=JobState.ANALYSED)


TASK_BODIES: Mapping[str, TaskBody] = {ANALYSE_TASK: run_analyse, SEND_TASK: run_send}
TASK_STEPS: Mapping[str, Step] = {ANALYSE_TASK: Step.ANALYSE, SEND_TASK: Step.SEND}


PARKABLE: Mapping[str, tuple[JobState, ...]] = {
    ANALYSE_TASK: (JobState.READY, JobState.QUEUED, JobState.RUNNING),
    SEND_TASK: (JobState.ANALYSED, JobState.QUEUED, JobState.RUNNING),
}
"""The states from which a step's failure parks its job: never a job that has moved past the step."""


def park(ctx: WorkerContext, job_id: int, reason: str, task_name: str = ANALYSE_TASK) -> JobState:
    """Move the job to failed with ``reason``; if even that fails, say so in the log.

    Only from a state the failing step owns (:data:`PARKABLE`): a job that another delivery
    finished in the meantime keeps its state, which is returned.
    """
    try:
        if ctx.repository.transition_job(job_id, JobState.FAILED, expected=PARKABLE[task_name], reason=reason):
            return JobState.FAILED
        return _state_now(ctx, job_id)
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
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"{task_name}: {type(exc).__name__}: {exc}") from exc
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
        return park(ctx, job_id, f"{exc} (gave up after {attempt.number} attempts)", task_name)
    except PermanentError as exc:
        return park(ctx, job_id, str(exc), task_name)
