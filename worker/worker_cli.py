"""``triphase worker``: a Celery worker for the analysis and send tasks, plus the outbox sweeper."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import typer

from db.runtime import Runtime

app = typer.Typer()
log = logging.getLogger(__name__)


@app.command()
def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option(help="comma-separated queues: arrival (on-arrival work) first, batch")] = "arrival,batch",
    concurrency: Annotated[int, typer.Option(min=1, help="worker processes (one per GPU on GPU hosts)")] = 1,
    sweep_s: Annotated[float, typer.Option(help="how often the outbox is swept for unpublished tasks")] = 10.0,
) -> None:
    """Run analysis and write-back tasks from the broker (Redis); republish what the broker lost."""
    from db.repository import Repository  # noqa: PLC0415
    from worker.celery_app import create_app, publish_outbox  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    celery = create_app(runtime.config.path)
    repository = Repository(runtime.database())
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(sweep_s):
            try:
                count = publish_outbox(celery, repository)
                if count:
                    log.info("outbox sweeper published %d task(s)", count)
            except Exception:  # noqa: BLE001 - database or broker down: try again next sweep
                log.warning("outbox sweep failed; retrying in %.0f s", sweep_s)

    publish_outbox(celery, repository) if _broker_up(celery) else None
    sweeper = threading.Thread(target=sweep, name="outbox-sweeper", daemon=True)
    sweeper.start()
    try:
        celery.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO",
                            "-P", "prefork", "--without-gossip", "--without-mingle", "-n", "triphase@%h"])
    finally:
        stop.set()


def _broker_up(celery: object) -> bool:
    try:
        with celery.connection_for_write() as connection:  # type: ignore[attr-defined]
            connection.ensure_connection(max_retries=1, timeout=3)
        return True
    except Exception:  # noqa: BLE001
        log.warning("broker unavailable at start; the sweeper will publish when it is back")
        return False
