"""Commands that run the pipeline as a whole: ``triphase worker``, ``demo`` and ``batch``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress

from db.repository import Repository
from db.runtime import Runtime
from db.task_names import BATCH_QUEUE
from db.vocabulary import CompletedBy
from node.cli import remote_node
from node.scu import find_studies, move_study
from node.settings import NodeSettings
from node.spool import Spool
from worker.batch import import_folder, import_from_dicomweb
from worker.celery_app import create_app
from worker.demo import run_demo
from worker.dicomweb import search_studies, service_for
from worker.evaluation.imports import import_file
from worker.metrics import WorkerMetricsService
from worker.orchestration.sweeper import SweeperOptions, SweeperProcess
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

batch_app = typer.Typer(help="Retrospective batches.", no_args_is_help=True)


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


@batch_app.command("import")
def batch_import(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="folders of studies", exists=True)],
    shadow: Annotated[bool, typer.Option("--shadow", help="analyse and audit only; send nothing to the PACS")
                      ] = False,
    labels: Annotated[Path | None, typer.Option("--labels", exists=True, dir_okay=False,
                                                help="ground truth (labels.csv) to import with the studies")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Register studies as if received and queue them as batch work (resumable: re-run to continue)."""
    runtime: Runtime = ctx.obj
    node = runtime.section(NodeSettings)
    spool = Spool.from_settings(node, runtime.general)
    repository = Repository(runtime.database())
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("importing", total=None)
        summary = import_folder(paths, spool, repository, shadow=shadow,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    truth_rows = None
    if labels is not None:
            truth_rows = import_file("truth", labels, repository, replace=True)
    if as_json:
        typer.echo(json.dumps(summary.as_json() | {"truth_rows": truth_rows}, indent=2))
    else:
        if truth_rows is not None:
            typer.echo(f"ground truth: {truth_rows} lesion(s) imported from {labels}")
        typer.echo(f"{summary.files} files: {summary.stored} stored, {summary.already_there} already there, "
                   f"{len(summary.unreadable)} unreadable; {len(summary.studies_queued)} studies queued, "
                   f"{summary.studies_already_queued} already queued before")
        for path, reason in summary.unreadable[:20]:
            typer.echo(f"  unreadable {path}: {reason}", err=True)


def _query_keys(query: list[str]) -> dict[str, str]:
    keys = {}
    for item in query:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--query")
        keys[key.strip()] = value.strip()
    return keys


DryRunOption = Annotated[bool, typer.Option("--dry-run", help="list the matches, retrieve nothing")]
ShadowOption = Annotated[bool, typer.Option("--shadow", help="analyse and audit only; send nothing back")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable summary")]


@batch_app.command("pacs")
def batch_pacs(
    ctx: typer.Context,
    source: Annotated[str, typer.Option("--from", help="the PACS: AET@HOST:PORT or a configured peer name")],
    query: Annotated[list[str], typer.Option("--query", help="KEY=VALUE study-level matching key, repeatable (e.g. "
                                             "StudyDate=20250101-20251231, ModalitiesInStudy=CT)")],
    dry_run: DryRunOption = False, shadow: ShadowOption = False, as_json: JsonOption = False,
) -> None:
    """C-FIND the PACS, C-MOVE each study to this node (which must be running) and queue it as batch work."""
    runtime: Runtime = ctx.obj
    keys = _query_keys(query)
    remote = remote_node(source, runtime)
    ae_title = runtime.section(NodeSettings).ae_title
    matches = find_studies(remote, keys, calling_ae=ae_title)
    rows = []
    repository = None if dry_run else Repository(runtime.database())
    for match in matches:
        uid = match["StudyInstanceUID"]
        row: dict[str, object] = {"study_uid": uid}
        if repository is not None:
            completed, failed = move_study(remote, uid, ae_title, calling_ae=ae_title)
            row.update(retrieved=completed, failed=failed)
            try:
                done = repository.complete_study(uid, by=CompletedBy.BATCH, queue=BATCH_QUEUE, shadow=shadow)
                row["job"] = done.job_id if done else None
            except LookupError:
                row["job"] = None
                row["problem"] = "nothing arrived at the node (is it running, and known to the PACS?)"
        rows.append(row)
    if as_json:
        typer.echo(json.dumps({"matches": len(matches), "studies": rows}, indent=2))
        return
    typer.echo(f"{len(matches)} studies match at {remote}")
    for row in rows:
        typer.echo("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if any("problem" in r or r.get("failed") for r in rows):
        raise typer.Exit(1)


@batch_app.command("dicomweb")
def batch_dicomweb(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="the DICOMweb base URL, or the name of a configured "
                                     "dicomweb destination (its token and CA bundle are used)")],
    query: Annotated[list[str], typer.Option("--query", help="KEY=VALUE QIDO-RS study filter, repeatable (e.g. "
                                             "StudyDate=20250101-20251231, ModalitiesInStudy=CT)")],
    dry_run: DryRunOption = False, shadow: ShadowOption = False, as_json: JsonOption = False,
) -> None:
    """QIDO-RS search a DICOMweb server, WADO-RS retrieve each study into the spool and queue it as batch work."""
    runtime: Runtime = ctx.obj
    service = service_for(url, runtime.section(WorkerSettings).destinations)
    matches = search_studies(service, _query_keys(query))
    rows: list[dict[str, object]] = [{"study_uid": m.study_uid, "study_date": m.study_date,
                                      "modalities": m.modalities} for m in matches]
    if not dry_run:
        spool = Spool.from_settings(runtime.section(NodeSettings), runtime.general)
        retrieved = import_from_dicomweb(service, [m.study_uid for m in matches], spool,
                                         Repository(runtime.database()), downloads=runtime.general.data_dir
                                         / "downloads", shadow=shadow)
        rows = [r.as_json() for r in retrieved]
    if as_json:
        typer.echo(json.dumps({"matches": len(matches), "studies": rows}, indent=2))
    else:
        typer.echo(f"{len(matches)} studies match at {service.url}")
        for row in rows:
            typer.echo("  " + ", ".join(f"{k} {v}" for k, v in row.items() if v is not None))
    if any("problem" in r for r in rows):
        raise typer.Exit(1)
