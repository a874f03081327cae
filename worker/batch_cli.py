"""``triphase batch import``: queue a folder of studies for retrospective analysis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from db.runtime import Runtime

app = typer.Typer(help="Retrospective batches.", no_args_is_help=True)


@app.command("import")
def batch_import(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="folders of studies", exists=True)],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Register studies as if received and queue them as batch work (resumable: re-run to continue)."""
    from rich.progress import Progress  # noqa: PLC0415

    from db.repository import Repository  # noqa: PLC0415
    from node.settings import NodeSettings  # noqa: PLC0415
    from node.spool import Spool  # noqa: PLC0415
    from worker.batch import import_folder  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    node = runtime.section(NodeSettings)
    spool = Spool(node.spool_dir or runtime.general.spool_dir, min_free_bytes=node.min_free_disk_mb * 1024 * 1024)
    repository = Repository(runtime.database())
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("importing", total=None)
        summary = import_folder(paths, spool, repository,
                                progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        typer.echo(json.dumps(summary.as_json(), indent=2))
    else:
        typer.echo(f"{summary.files} files: {summary.stored} stored, {summary.already_there} already there, "
                   f"{len(summary.unreadable)} unreadable; {len(summary.studies_queued)} studies queued, "
                   f"{summary.studies_already_queued} already queued before")
        for path, reason in summary.unreadable[:20]:
            typer.echo(f"  unreadable {path}: {reason}", err=True)
