"""Commands that run the pipeline as a whole: ``triphase worker`` and ``demo`` (``batch`` is in
:mod:`worker.orchestration.batch_cli`, which loads none of the training code these load)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from db.runtime import Runtime
from worker.celery_app import create_app
from worker.demo import run_demo
from worker.metrics import WorkerMetricsService
from worker.orchestration.sweeper import SweeperOptions, SweeperProcess
from worker.settings import WorkerSettings


def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option(help="comma-separated queues: arrival (on-arrival work) first, batch")
                      ] = "arrival,batch",
    concurrency: Annotated[int, typer.Option(min=1, help="worker processes (one per GPU on GPU hosts)")] = 1,
    sweep_s: Annotated[float, typer.Option(min=0.01, help="how often the outbox is swept for unpublished tasks")
                       ] = 10.0,
) -> None:
    """Run analysis and write-back tasks from the broker (Redis); republish what the broker lost."""
    runtime: Runtime = ctx.obj
    settings = runtime.section(WorkerSettings)
    celery = create_app(runtime.config.path, processes=concurrency)
    runtime.database()  # migrated here, once, before any process of this worker opens it
    runtime.close()  # the prefork parent keeps no connection: worker/orchestration/sweeper.py says why
    sweeper = SweeperProcess(SweeperOptions(runtime.config.path, sweep_s, settings.job_lease_s,
                                            log_level="DEBUG" if runtime.debug else runtime.general.log_level.upper(),
                                            count_metrics=bool(settings.metrics_port)))
    # The metrics directory is named in the environment before the sweeper is spawned, which reads it.
    metrics = WorkerMetricsService.start(data_dir=runtime.general.data_dir, bind=settings.metrics_bind,
                                         port=settings.metrics_port, app=celery,
                                         outbox=sweeper.outbox) if settings.metrics_port else None
    sweeper.start()
    try:
        celery.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
                            "-P", "prefork", "--without-gossip", "--without-mingle", "-n", "triphase@%h"])
    finally:
        sweeper.stop()
        if metrics is not None:
            metrics.stop()


def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="demo folder (default <data_dir>/demo; replaced)")] = None,
    studies: Annotated[int, typer.Option(min=1, max=20, help="studies sent to the node")] = 4,
    training: Annotated[int, typer.Option(min=10, max=200, help="studies the demo model is trained on")] = 25,
    seed: Annotated[int, typer.Option(help="synthetic data seed")] = 0,
    multiframe: Annotated[bool, typer.Option("--multiframe", help="send each series as one multi-frame "
                                             "Legacy Converted Enhanced CT instance")] = False,
) -> None:
    """Run the whole loop on synthetic studies: receive, group, composite, classify, SR + SC, evaluate."""
    runtime: Runtime = ctx.obj
    console = Console(soft_wrap=True)  # a path is never broken across lines, piped or not
    folder = out or runtime.general.data_dir / "demo"
    result = run_demo(folder, train_studies=training, demo_studies=studies, seed=seed, multiframe=multiframe,
                      say=lambda text: console.print(text, highlight=False, markup=False))
    console.print("4. Results (research use only; NOT FOR DIAGNOSTIC USE)", highlight=False, markup=False)
    for study in result.studies:
        console.print(f"   Study {study['study_uid']} (job #{study['job']}, completed by "
                      f"{study['completed_by'] or '?'}): {study['state']}"
                      + (f" - {study['reason']}" if study['reason'] and study['state'] != 'sent' else ""),
                      highlight=False, markup=False)
        if study["roles"]:
            console.print("     phases found: " + ", ".join(f"{role} = {desc!r}" for role, desc
                                                          in study["roles"].items() if desc),
                          highlight=False, markup=False)
        for lesion in study["lesions"]:
            p = lesion["probabilities"]
            top = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in sorted(p.items(), key=lambda kv: -kv[1])[:3])
            console.print(f"     lesion {lesion['lesion_id']} (location from {lesion['roi']}): predicted "
                          f"{lesion['predicted'].replace('_', ' ')}, pathology (synthetic truth) "
                          f"{(lesion['truth'] or '?').replace('_', ' ')}  [{top}]", highlight=False, markup=False)
        for item in study["stored"]:
            console.print(f"     {item['object']} stored in the stand-in PACS: {item['path']}",
                          highlight=False, markup=False)
    if result.accuracy is not None:
        console.print(f"5. Evaluation on {sum(len(s['lesions']) for s in result.studies)} lesions: accuracy "
                      f"{result.accuracy:.2f} (always answering the most common class would score "
                      f"{result.majority_baseline:.2f}); a handful of lesions says little - use "
                      f"`triphase train` and the evaluation tools on real cohorts.", highlight=False, markup=False)
    console.print(f"   Secondary Captures as PNG in {result.folder / 'png'}; everything in {result.folder}; "
                  f"model {result.model[:12]}; {result.elapsed_s:.0f} s.", highlight=False, markup=False)
    if not result.studies or any(s["state"] not in ("sent", "shadowed", "skipped") for s in result.studies):
        raise typer.Exit(1)
