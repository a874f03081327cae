"""What the tasks do: analyse a completed study, send its results. Thin, idempotent, by job id.

The Celery tasks and the embedded runner call these functions with a :class:`WorkerContext`
(one per process: database engine, rules, lazily loaded models). Each step checks the job's state
first, so a redelivered or repeated task finishes the job once and writes no duplicate: SR and SC
UIDs are deterministic, predictions are replaced, not added.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from db.repository import Repository
from db.runtime import Runtime
from db.schema import Instance, Job, Series, Study
from db.states import JobState
from node.settings import NodeSettings
from worker.grouping import Rules, load_rules
from worker.results.writeback import Destination, send_to
from worker.settings import GroupingSettings, ModelsSection, WorkerSettings

log = logging.getLogger(__name__)

DONE_STATES = {JobState.ANALYSED, JobState.SENT, JobState.SHADOWED, JobState.SKIPPED, JobState.FAILED}


class NoModel(LookupError):
    """No model is configured (or found) for a study's task."""


@dataclass
class WorkerContext:
    repository: Repository
    rules: Rules
    spool_root: Path
    results_root: Path
    destinations: list[Destination]
    models: dict[str, str]
    calling_ae: str
    data_dir: Path
    models_dir: Path
    device: str = "auto"
    _loaded: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> WorkerContext:
        worker = runtime.section(WorkerSettings)
        node = runtime.section(NodeSettings)
        general = runtime.general
        return cls(
            repository=Repository(runtime.database()),
            rules=load_rules(runtime.section(GroupingSettings).rules),
            spool_root=node.spool_dir or general.spool_dir, results_root=general.data_dir / "results",
            destinations=[Destination(d.name, d.ae_title, d.host, d.port, d.shadow, d.tls,
                                      *(str(p) if p else None for p in (d.tls_ca_file, d.tls_cert_file, d.tls_key_file)))
                          for d in worker.destinations],
            models=dict(worker.models), calling_ae=node.ae_title, data_dir=general.data_dir,
            models_dir=general.models_dir, device=runtime.section(ModelsSection).device,
        )

    def classifier_for(self, task: str) -> tuple[Any, Any]:
        """(artifact, classifier) for a task, loaded once per process."""
        if task not in self._loaded:
            reference = self.models.get(task)
            if not reference:
                raise NoModel(f"no model configured for task {task} ([worker.models] {task} = MODEL)")
            from models.architectures import default_registry  # noqa: PLC0415
            from models.artifact import resolve_artifact  # noqa: PLC0415
            from models.inference import Classifier  # noqa: PLC0415

            artifact = resolve_artifact(reference, self.models_dir)
            self._loaded[task] = (artifact, Classifier(artifact, registry=default_registry(), device=self.device))
        return self._loaded[task]


def _job(ctx: WorkerContext, job_id: int) -> tuple[str, int, str, bool]:
    """(state, study id, study UID, shadow) of a job."""
    with ctx.repository.db.session() as session:
        row = session.execute(select(Job.state, Job.study_id, Study.study_uid, Job.shadow).join(Study)
                              .where(Job.id == job_id)).one_or_none()
    if row is None:
        raise LookupError(f"no job {job_id}")
    return row.state, row.study_id, row.study_uid, bool(row.shadow)


def _study_files(ctx: WorkerContext, study_id: int) -> list[Path]:
    with ctx.repository.db.session() as session:
        paths = session.scalars(select(Instance.path).join(Series).where(Series.study_id == study_id)).all()
    return [ctx.spool_root / p for p in paths]


def _start(ctx: WorkerContext, job_id: int, state: str) -> None:
    if state == JobState.READY.value:
        ctx.repository.transition_job(job_id, JobState.QUEUED)
        state = JobState.QUEUED.value
    if state == JobState.QUEUED.value:
        ctx.repository.transition_job(job_id, JobState.RUNNING)


def run_analyse(ctx: WorkerContext, job_id: int) -> str:
    """Group, composite, classify; write SR + SC to the job's results folder; queue the send."""
    from worker.analysis import analyse_study  # noqa: PLC0415 - pulls in torch
    from worker.grouping.matching import group_study  # noqa: PLC0415
    from worker.grouping.series_info import scan_studies  # noqa: PLC0415
    from worker.results.algorithm import algorithm_for  # noqa: PLC0415
    from worker.results.identity import device_uid  # noqa: PLC0415

    state, study_id, study_uid, _ = _job(ctx, job_id)
    if JobState(state) in DONE_STATES:
        return state  # a repeated delivery: the work is done
    _start(ctx, job_id, state)
    scan = scan_studies(_study_files(ctx, study_id))
    series = scan.series.get(study_uid, [])
    if not series:
        ctx.repository.transition_job(job_id, JobState.FAILED, reason="the study's files are missing from the spool")
        return JobState.FAILED.value
    task = group_study(study_uid, series, ctx.rules).task
    if task is None:
        ctx.repository.transition_job(job_id, JobState.SKIPPED, reason="not applicable: no CT or MR task for this study")
        return JobState.SKIPPED.value
    try:
        artifact, classifier = ctx.classifier_for(task)
    except NoModel as exc:
        ctx.repository.transition_job(job_id, JobState.SKIPPED, reason=str(exc))
        return JobState.SKIPPED.value
    result = analyse_study(study_uid, series, ctx.rules, classifier=classifier, algorithm=algorithm_for(artifact),
                           device_uid=device_uid(ctx.data_dir))
    if result.outcome == "skipped":
        ctx.repository.transition_job(job_id, JobState.SKIPPED, reason=result.reason, roles=result.roles)
        return JobState.SKIPPED.value
    folder = ctx.results_root / str(job_id)
    staging = ctx.results_root / f".{job_id}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    assert result.sr is not None
    result.sr.save_as(staging / "SR.dcm", enforce_file_format=True)
    for sc, lesion in zip(result.scs, result.lesions, strict=True):
        sc.save_as(staging / f"SC_{lesion['lesion_id']}.dcm", enforce_file_format=True)
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    ctx.repository.record_analysis(job_id, task=task, model=artifact.hash, lesions=result.lesions,
                                   detail={"roles": result.roles}, enqueue_send=True)
    return JobState.ANALYSED.value


def run_send(ctx: WorkerContext, job_id: int) -> str:
    """Send the job's SR and SC to every destination; sent, shadowed, or failed (parked)."""
    state, _, study_uid, shadow = _job(ctx, job_id)
    if state in (JobState.SENT.value, JobState.SHADOWED.value, JobState.SKIPPED.value):
        return state
    if state == JobState.QUEUED.value:  # a resend: the results on disk are reused
        ctx.repository.transition_job(job_id, JobState.RUNNING, reason="resend: results on disk reused")
        ctx.repository.transition_job(job_id, JobState.ANALYSED, reason="resend: results on disk reused")
    elif state != JobState.ANALYSED.value:
        return state
    files = sorted((ctx.results_root / str(job_id)).glob("*.dcm"))
    if not files:
        ctx.repository.transition_job(job_id, JobState.FAILED, reason="no results on disk; analyse the study again")
        return JobState.FAILED.value
    active = [d for d in ctx.destinations if not d.shadow]
    if shadow:
        ctx.repository.transition_job(job_id, JobState.SHADOWED,
                                      reason="shadow run (peer or batch): analysed and audited, nothing sent")
        return JobState.SHADOWED.value
    if not active:
        ctx.repository.transition_job(job_id, JobState.SHADOWED,
                                      reason="no destination configured (shadow mode): nothing sent")
        return JobState.SHADOWED.value
    failures = []
    for destination in active:
        outcome = send_to(destination, files, calling_ae=ctx.calling_ae)
        ctx.repository.audit(f"send.{outcome.state}", outcome.reason or f"{len(files)} objects to {destination.name}",
                             severity="info" if outcome.state == "sent" else "error", study_uid=study_uid,
                             job_id=job_id, detail=outcome.as_json())
        if outcome.state != "sent":
            failures.append(outcome.reason or destination.name)
    if failures:
        ctx.repository.transition_job(job_id, JobState.FAILED, reason="; ".join(failures))
        return JobState.FAILED.value
    ctx.repository.transition_job(job_id, JobState.SENT, reason=f"sent to {', '.join(d.name for d in active)}")
    return JobState.SENT.value
