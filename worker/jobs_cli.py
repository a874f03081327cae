"""``triphase resend``: send a job's results again."""

from __future__ import annotations

from typing import Annotated

import typer

from db.runtime import Runtime

app = typer.Typer()


@app.command()
def resend(ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="job number (see triphase studies)")]) -> None:
    """Queue a sent, failed or analysed job's results for sending again (same UIDs: replaces, never duplicates)."""
    from db.repository import Repository  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    Repository(runtime.database()).requeue_send(job_id)
    typer.echo(f"job #{job_id} queued for sending again")
