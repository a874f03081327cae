"""``triphase web``: serve the console (see deploy/OPERATIONS.md for the token and a TLS proxy).

Its imports (Starlette, Jinja2, uvicorn) are light and none of them pulls in the machine-learning
stack; the command table loads this module only when ``web`` is run.
"""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from db.runtime import Runtime
from worker.settings import WorkerSettings
from worker.web.app import Console, create_app
from worker.web.settings import WebSettings

app = typer.Typer()


@app.command()
def web(
    ctx: typer.Context,
    bind: Annotated[str | None, typer.Option("--bind", help="address to listen on ([web] bind)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port ([web] port, 8080)")] = None,
) -> None:
    """Studies, jobs, failures, models and evaluation reports in a browser (read-only without the token)."""
    runtime: Runtime = ctx.obj
    settings = runtime.section(WebSettings, bind=bind, port=port)
    general = runtime.general
    console = Console(runtime.database(), settings, general.models_dir, general.reports_dir,
                      dict(runtime.section(WorkerSettings).models))
    mode = "actions need the token" if settings.actions_enabled else "read-only: no [web] token"
    typer.echo(f"triphase console on http://{settings.bind}:{settings.port}/ ({mode})")
    # Forwarded headers are trusted from a proxy on this host only (uvicorn's default), so the audited
    # client address is the browser's, not the proxy's, and cannot be forged from elsewhere.
    uvicorn.run(create_app(console), host=settings.bind, port=settings.port, proxy_headers=True,
                log_level="warning", server_header=False)
