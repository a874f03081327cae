"""Commands of the DICOM edge: ``node``, ``echo``, ``send``, ``studies``.

None of these import torch or need a server beyond the database (SQLite by default): this module
imports only node/ and db/, which never import the machine-learning stack.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Annotated, TypedDict

import typer
from rich.console import Console
from rich.table import Table

from db.private import private_dir
from db.queries import list_studies
from db.repository import Repository
from db.runtime import Runtime
from node import collector, publisher, recovery, scp, scu
from node.balance import AcceptBoard, SharedListeners
from node.dispatch import JobDispatcher, OutboxOnly
from node.metrics import SharedMetrics
from node.receivers import ReceiverPool, ReceiverSpec, listening_settings
from node.scu import RemoteNode
from node.settings import BrokerSettings, NodeSettings
from node.spool import Spool

log = logging.getLogger(__name__)

# Where the process that assembles the commands puts a ``Runtime -> RoleCheck`` factory (the
# grouping rules live with the worker; the node does not import them). Without one, studies
# complete by the quiet period and the hard cap only.
ROLE_CHECK_FACTORY = "triphase.node.role_check_factory"  # set by worker/cli.py

class SendProblem(TypedDict, total=False):
    """A file that was not stored: refused with a status, or failed or skipped with a reason."""

    path: str
    status: str
    error: str


class SendSummary(TypedDict):
    """What ``triphase send --json`` prints."""

    to: str
    sent: int
    refused: int
    failed: int
    skipped: int
    problems: list[SendProblem]


studies_app = typer.Typer(help="Received studies.", invoke_without_command=True)


def _node_settings(runtime: Runtime, **overrides: object) -> NodeSettings:
    return runtime.section(NodeSettings, **overrides)


def run_node(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="listen port (overrides node.port)")] = None,
    bind: Annotated[str | None, typer.Option(help="bind address (overrides node.bind)")] = None,
    ae_title: Annotated[str | None, typer.Option("--ae-title", help="our AE title")] = None,
    promiscuous: Annotated[bool | None, typer.Option("--promiscuous/--peers-only",
                                                     help="accept any calling AE title")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish",
                                          help="publish completed studies to the broker ([broker] url); "
                                          "without it they wait in the outbox for a worker's sweeper")] = True,
) -> None:
    """Run the DICOM node: receive studies (C-ECHO, C-STORE) until SIGTERM or Ctrl-C."""
    runtime: Runtime = ctx.obj
    settings = _node_settings(runtime, port=port, bind=bind, ae_title=ae_title, promiscuous=promiscuous)
    private_dir(runtime.general.data_dir)
    spool = Spool.from_settings(settings, runtime.general)
    repository = Repository(runtime.database())
    recovery.recover(spool, repository, settings)
    dispatcher: JobDispatcher = OutboxOnly()
    if publish:
        broker = runtime.section(BrokerSettings)
        dispatcher = publisher.CeleryPublisher(broker.url, repository,
                                               visibility_timeout_s=broker.visibility_timeout_s)
    factory = ctx.meta.get(ROLE_CHECK_FACTORY)
    # Counters of several receiving processes are added up; set up before any counter exists.
    shared = (SharedMetrics.create(runtime.general.data_dir, repository.db)
              if settings.receivers > 1 and settings.metrics_port else None)
    # Several receiving processes take turns on the listeners by load (node.balance)
    listeners = SharedListeners(AcceptBoard(settings.receivers), 0) if settings.receivers > 1 else None
    node = scp.DicomNode(settings, spool, repository, dispatcher, role_check=factory(runtime) if factory else None,
                         shared=listeners)
    node.metrics_registry = shared.registry if shared else None

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    recovery.renew_deadlines(repository, settings)  # counted from now: the node listens next
    node.start()
    pool = _start_receivers(runtime, settings, node)
    collector.settle()
    ports = ", ".join(map(str, node.door.listeners)) if node.door else str(node.port)
    typer.echo(f"triphase node {settings.ae_title} listening on {settings.bind} port {ports}"
               f"{f' ({settings.receivers} receiving processes)' if pool else ''}", err=True)
    # Wake up regularly: a signal delivered to another thread only runs its Python handler when
    # the main thread next runs bytecode, and a bare wait() might never return.
    while not stop.wait(0.5):
        if pool is not None:
            pool.supervise()
    if pool is not None:
        pool.stop()
    node.shutdown()
    if pool is not None:
        pool.join()
    if shared is not None:
        shared.remove()


def _start_receivers(runtime: Runtime, settings: NodeSettings, node: scp.DicomNode) -> ReceiverPool | None:
    """The further receiving processes of ``[node] receivers``, on the ports the node just bound."""
    if settings.receivers <= 1:
        return None
    level = "DEBUG" if runtime.debug else runtime.general.log_level.upper()
    assert node.door is not None and node.shared is not None
    shared = replace(node.shared, sockets=node.door.listening_sockets)
    spec = ReceiverSpec(runtime.config, listening_settings(settings, node.port, node.tls_port), level, 0,
                        shared=shared)
    return ReceiverPool(spec, settings.receivers - 1, grace_s=settings.shutdown_grace_s).start()


def remote_node(text: str, runtime: Runtime) -> RemoteNode:
    """AET@HOST:PORT, or the name of a configured peer that has a host and a port."""
    try:
        return RemoteNode.resolve(text, _node_settings(runtime).peers)
    except LookupError as exc:
        raise typer.BadParameter(str(exc)) from None


def echo(
    ctx: typer.Context,
    remote: Annotated[str, typer.Argument(help="AET@HOST:PORT or a configured peer name")],
    timeout: Annotated[float, typer.Option(help="seconds")] = 10.0,
) -> None:
    """C-ECHO a remote DICOM node (is it there, and does it accept us?)."""
    runtime: Runtime = ctx.obj
    settings = _node_settings(runtime)
    target = remote_node(remote, runtime)
    status = scu.echo(target, calling_ae=settings.ae_title, timeout_s=timeout)
    if status != 0:
        typer.echo(f"C-ECHO to {target}: status 0x{status:04X}", err=True)
        raise typer.Exit(1)
    typer.echo(f"C-ECHO to {target}: success")


def send(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="files or folders (searched recursively)", exists=True)],
    to: Annotated[str, typer.Option("--to", help="AET@HOST:PORT or a configured peer name")],
    timeout: Annotated[float, typer.Option(help="seconds per DIMSE message")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """C-STORE DICOM files; exits 1 if any instance was not stored."""
    runtime: Runtime = ctx.obj
    settings = _node_settings(runtime)
    target = remote_node(to, runtime)
    result = scu.SendResult()
    files = scu.scan(paths, result)
    scu.send(files, target, calling_ae=settings.ae_title, timeout_s=timeout, result=result)
    problems: list[SendProblem] = [{"path": str(p), "status": f"0x{s:04X}"} for p, s in result.refused]
    problems += [{"path": str(p), "error": why} for p, why in result.failed + result.skipped]
    summary: SendSummary = {
        "to": str(target), "sent": len(result.sent) - len(result.refused), "refused": len(result.refused),
        "failed": len(result.failed), "skipped": len(result.skipped), "problems": problems,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        for problem in problems:
            typer.echo(f"  {problem['path']}: {problem.get('status') or problem.get('error')}", err=True)
        typer.echo(f"{summary['sent']} stored at {target}, {summary['refused']} refused, "
                   f"{summary['failed']} failed, {summary['skipped']} skipped")
    if not result.ok or not files:
        raise typer.Exit(1)


@studies_app.callback()
def studies(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    limit: Annotated[int, typer.Option(help="newest N studies")] = 200,
) -> None:
    """List received studies: series and instance counts, completion state, latest job."""
    if ctx.invoked_subcommand is not None:
        return
    runtime: Runtime = ctx.obj
    rows = list_studies(runtime.database(), limit=limit)
    if as_json:
        typer.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    table = Table("state", "rev", "completed by", "series", "instances", "from", "last received", "job")
    table.add_column("Study Instance UID", no_wrap=True)
    for r in rows:
        job = f"#{r.latest_job_id} {r.latest_job_state}" if r.latest_job_id else ""
        table.add_row(r.state, str(r.revision), r.completed_by or "", str(r.series), str(r.instances),
                      r.calling_ae or "", r.last_received_at.strftime("%Y-%m-%d %H:%M:%S"), job, r.study_uid)
    console = Console()
    Console(width=max(console.width, 170)).print(table)  # UIDs are never cut, piped or not


@studies_app.command("complete")
def complete(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID")],
) -> None:
    """Mark a study complete now (without waiting for its quiet period) and create its job."""
    runtime: Runtime = ctx.obj
    try:
        done = Repository(runtime.database()).complete_study(study_uid.strip())
    except LookupError:
        typer.echo(f"no study {study_uid} has been received", err=True)
        raise typer.Exit(1) from None
    if done is None:
        typer.echo("study was already complete")
    else:
        typer.echo(f"study complete (revision {done.revision}); job #{done.job_id} ready")
