"""The ``triphase`` command: one entry point, each package contributing its own commands.

Heavy libraries (torch, scikit-learn, highdicom, matplotlib) are imported inside command bodies,
so ``triphase --help`` and the node's commands stay fast and need no ML stack.
Exit codes: 0 done, 1 failed, 2 usage or configuration error; errors are one line unless --debug.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from db import cli as db_cli
from db.private import restrict_new_files
from db.runtime import Runtime
from db.settings import MASK, ConfigError, ConfigFile, DbSettings, GeneralSettings, is_secret_name, mask_url
from node import cli as node_cli
from node.settings import BrokerSettings, NodeSettings
from worker import analyze_cli, batch_cli, composite_cli, demo_cli, jobs_cli, model_commands, worker_cli
from worker.evaluation import cli as evaluation_cli
from worker.grouping import cli as grouping_cli
from worker.grouping.readiness import role_check_for
from worker.settings import GroupingSettings, ModelsSection, WorkerSettings
from worker.synth import cli as synth_cli

SECTIONS: tuple[type, ...] = (GeneralSettings, DbSettings, NodeSettings, BrokerSettings, WorkerSettings,
                              GroupingSettings, ModelsSection)


class TriphaseApp(typer.Typer):
    """Turns expected errors into one line and the documented exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        debug = "--debug" in sys.argv
        try:
            return super().__call__(*args, **kwargs)
        except ConfigError as exc:
            if debug:
                raise
            typer.echo(f"triphase: configuration error: {exc}", err=True)
            sys.exit(2)
        except (ConnectionError, OSError, LookupError, ValueError) as exc:
            if debug:
                raise
            typer.echo(f"triphase: {exc}", err=True)
            sys.exit(1)


app = TriphaseApp(
    name="triphase",
    help="A DICOM node for multi-phase liver CT/MRI lesion classification "
    "(research use; not for diagnostic use until validated).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", help="configuration file (TOML)",
                                                envvar="TRIPHASE_CONFIG")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="full tracebacks and DEBUG logs")] = False,
) -> None:
    restrict_new_files()  # before anything is written: spool, database, results are private
    config_file = ConfigFile.locate(config)
    runtime = Runtime(config=config_file, debug=debug)
    for section in SECTIONS:  # a mistake anywhere in the file is reported before any work starts
        runtime.section(section)  # type: ignore[type-var]
    level = "DEBUG" if debug else runtime.general.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not debug:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        # pynetdicom logs transport errors that our own messages already explain in one line.
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
        # highdicom logs UIDs at INFO; patient-related identifiers stay at DEBUG.
        logging.getLogger("highdicom").setLevel(logging.WARNING)
    ctx.obj = runtime
    ctx.meta[node_cli.ROLE_CHECK_FACTORY] = role_check_for  # the node completes a study when it is whole
    ctx.call_on_close(runtime.close)


for command in node_cli.app.registered_commands:
    app.registered_commands.append(command)
for group in node_cli.app.registered_groups:
    app.registered_groups.append(group)
app.add_typer(db_cli.app, name="db")
app.add_typer(batch_cli.app, name="batch")
app.registered_commands.extend(synth_cli.app.registered_commands)
app.registered_commands.extend(grouping_cli.app.registered_commands)
app.registered_commands.extend(composite_cli.app.registered_commands)
app.registered_commands.extend(analyze_cli.app.registered_commands)
app.registered_commands.extend(jobs_cli.app.registered_commands)
app.registered_commands.extend(demo_cli.app.registered_commands)
app.registered_commands.extend(worker_cli.app.registered_commands)
model_commands.register(app)  # weights, models, train, predict
evaluation_cli.register(app)  # truth, reads, evaluate, experiment

config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _masked(section: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Every URL with its secrets hidden, and every setting whose name says it is a secret."""
    masked: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            masked[name] = _masked(name, value)
        elif isinstance(value, str) and value and is_secret_name(name):
            masked[name] = MASK
        elif isinstance(value, str) and "://" in value:
            masked[name] = mask_url(value)
        else:
            masked[name] = value
    return masked


def effective_configuration(runtime: Runtime) -> dict[str, Any]:
    """Every section as the program sees it (file + environment + defaults), secrets masked."""
    out: dict[str, Any] = {}
    for cls in SECTIONS:
        settings = runtime.section(cls)  # type: ignore[type-var]
        values = _masked(cls.section, settings.model_dump(mode="json"))  # type: ignore[attr-defined]
        if cls.section is None:  # type: ignore[attr-defined]
            out.update(values)
        else:
            out[cls.section] = values  # type: ignore[attr-defined]
    out["db"]["effective_url"] = mask_url(runtime.section(DbSettings).effective_url(runtime.general))
    return out


@config_app.command("show")
def config_show(ctx: typer.Context,
                as_json: Annotated[bool, typer.Option("--json", help="JSON instead of TOML")] = False) -> None:
    """Print the effective configuration (file, environment and defaults merged)."""
    runtime: Runtime = ctx.obj
    data = effective_configuration(runtime)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    source = runtime.config.path or "none (defaults and environment)"
    typer.echo(f"# configuration file: {source}")
    typer.echo(_to_toml(data))


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def _to_toml(data: dict[str, Any]) -> str:
    """Small TOML writer for display (the standard library reads TOML but does not write it)."""
    lines: list[str] = []
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if value is not None and not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        arrays = {k: v for k, v in table.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        for key, value in table.items():
            if key in arrays:
                continue
            if isinstance(value, dict):
                inline = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {inline} }}")
            elif value is None:
                lines.append(f"# {key} is unset")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, items in arrays.items():
            for item in items:
                lines.append(f"\n[[{name}.{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None)
    return "\n".join(lines)
