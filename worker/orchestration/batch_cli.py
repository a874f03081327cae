"""``triphase batch``: retrospective batches from a folder, a PACS (C-FIND and C-MOVE) or a DICOMweb
server, registered as if received and queued as batch work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
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
from worker.dicomweb import search_studies, service_for
from worker.evaluation.imports import import_file
from worker.settings import WorkerSettings

batch_app = typer.Typer(help="Retrospective batches.", no_args_is_help=True)


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
