"""``triphase db``: schema migrations of the audit database."""

from __future__ import annotations

import typer

from db.runtime import Runtime
from db.settings import mask_url

app = typer.Typer(help="The audit database.", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head", help="target migration")) -> None:
    """Create or migrate the audit database schema."""
    from db.migrate import upgrade as run_upgrade  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    database = runtime.database(upgrade=False)
    now = run_upgrade(database, revision)
    typer.echo(f"database {mask_url(database.url)} at revision {now}")


@app.command()
def current(ctx: typer.Context) -> None:
    """Show the schema revision in place and the newest one this version ships."""
    from db.migrate import current_revision, head_revision  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    database = runtime.database(upgrade=False)
    typer.echo(f"current: {current_revision(database) or 'none'}  head: {head_revision()}")
