"""``triphase db``: schema migrations of the audit database."""

from __future__ import annotations

import typer

from db import migrate
from db.runtime import Runtime
from db.settings import mask_url

app = typer.Typer(help="The audit database.", no_args_is_help=True)


@app.command()
def upgrade(ctx: typer.Context, revision: str = typer.Argument("head", help="target migration")) -> None:
    """Create or migrate the audit database schema."""
    runtime: Runtime = ctx.obj
    database = runtime.database(upgrade=False)
    now = migrate.upgrade(database, revision)
    typer.echo(f"database {mask_url(database.url)} at revision {now}")


@app.command()
def current(ctx: typer.Context) -> None:
    """Show the schema revision in place and the newest one this version ships."""
    runtime: Runtime = ctx.obj
    database = runtime.database(upgrade=False)
    typer.echo(f"current: {migrate.current_revision(database) or 'none'}  head: {migrate.head_revision()}")
