"""The ``triphase`` command: one entry point, one table of commands, each loaded when it runs.

Each package keeps its commands in its own ``cli.py`` and imports what it needs at the top. This
module names them in :data:`COMMANDS` with their one-line help, so ``triphase --help`` lists every
command without importing any of them, and ``triphase node`` never loads torch, scikit-learn,
highdicom or matplotlib (pynetdicom's ``__main__._APPS`` works the same way).
Exit codes: 0 done, 1 failed, 2 usage or configuration error; errors are one line unless --debug.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import tomli_w
import typer
from typer.core import TyperCommand, TyperGroup

from db.logs import configure_logging
from db.private import restrict_new_files
from db.runtime import Runtime
from db.settings import (
    MASK,
    ConfigError,
    ConfigFile,
    DbSettings,
    GeneralSettings,
    SectionSettings,
    is_secret_name,
    mask_url,
)
from node.settings import BrokerSettings, NodeSettings
from worker.settings import GroupingSettings, ModelsSection, WorkerSettings
from worker.web.settings import WebSettings

if TYPE_CHECKING:
    # typer vendors click; its groups take and return these types.
    from typer._click import Command, Context

    from node.completion import RoleCheck

SECTIONS: tuple[type[SectionSettings], ...] = (GeneralSettings, DbSettings, NodeSettings, BrokerSettings,
                                               WorkerSettings, GroupingSettings, ModelsSection, WebSettings)


class CommandEntry(NamedTuple):
    """Where a command lives: a module, its attribute (a command function or a ``typer.Typer`` group)."""

    module: str
    attribute: str
    help: str


COMMANDS: dict[str, CommandEntry] = {
    "node": CommandEntry("node.cli", "run_node",
                         "Run the DICOM node: receive studies (C-ECHO, C-STORE) until SIGTERM or Ctrl-C."),
    "echo": CommandEntry("node.cli", "echo", "C-ECHO a remote DICOM node (is it there, and does it accept us?)."),
    "send": CommandEntry("node.cli", "send", "C-STORE DICOM files; exits 1 if any instance was not stored."),
    "synth": CommandEntry("worker.synth.cli", "synth", "Write synthetic multi-phase liver studies (DICOM + SEG) "
                          "with labels.csv and reads.csv."),
    "groups": CommandEntry("worker.grouping.cli", "groups",
                           "Show which series plays which role (or why it was excluded), per study."),
    "composite": CommandEntry("worker.compositing.cli", "composite", "Group, align and composite each study; "
                              "one PNG + JSON per lesion, for people to look at."),
    "analyze": CommandEntry("worker.results.cli", "analyze", "Group, composite, classify and write a TID 1500 SR "
                            "+ Secondary Capture per study."),
    "resend": CommandEntry("worker.results.cli", "resend", "Queue a sent, failed or analysed job's results for "
                           "sending again (same UIDs: replaces, never duplicates)."),
    "demo": CommandEntry("worker.orchestration.cli", "demo", "Run the whole loop on synthetic studies: receive, "
                         "group, composite, classify, SR + SC, evaluate."),
    "worker": CommandEntry("worker.orchestration.cli", "worker", "Run analysis and write-back tasks from the "
                           "broker (Redis); republish what the broker lost."),
    "train": CommandEntry("worker.training.cli", "train", "Cross-validate a model on prepared composites, fit it "
                          "on all of them, and store the artifact."),
    "predict": CommandEntry("worker.training.cli", "predict", "Classify composites with a model artifact (a quick "
                            "check; the worker does this per study)."),
    "evaluate": CommandEntry("worker.evaluation.cli", "evaluate", "Metrics of the stored predictions against the "
                             "ground truth, with 95% CIs, baseline and readers."),
    "studies": CommandEntry("node.cli", "studies_app", "Received studies."),
    "db": CommandEntry("db.cli", "app", "The audit database."),
    "batch": CommandEntry("worker.orchestration.batch_cli", "batch_app", "Retrospective batches."),
    "weights": CommandEntry("worker.training.cli", "weights_app", "Pretrained ImageNet weights (offline)."),
    "models": CommandEntry("worker.training.cli", "models_app", "Trained model artifacts."),
    "truth": CommandEntry("worker.evaluation.cli", "truth_app", "Ground truth (labels.csv)."),
    "reads": CommandEntry("worker.evaluation.cli", "reads_app", "Readers' reads (reads.csv)."),
    "experiment": CommandEntry("worker.evaluation.cli", "experiment_app", "The papers' experiments on your data."),
    "web": CommandEntry("worker.web.cli", "web", "Studies, jobs, failures, models and evaluation reports in a "
                        "browser (read-only without the token)."),
}


def load_command(name: str) -> Command:
    """Import the module of command ``name`` and build its click command (a group for a ``typer.Typer``)."""
    entry = COMMANDS[name]
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        command: Command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """Lists :data:`COMMANDS` from the table and imports a command's module only when it is resolved.

    Help listings (``triphase --help``) see stand-ins that carry the table's name and help; running a
    command or asking for its own ``--help`` goes through :meth:`resolve_command`, which loads it.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        stand_ins = {name: TyperCommand(name, help=entry.help) for name, entry in COMMANDS.items()}
        self.commands = stand_ins | dict(self.commands)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if name in COMMANDS:
            command = load_command(name)
        return name, command, rest


ROLE_CHECK_FACTORY = "triphase.node.role_check_factory"
"""The context key under which ``triphase node`` finds how to build its role check (node/cli.py)."""


def role_check_factory(runtime: Runtime) -> RoleCheck:
    """The grouping rules' role check, loaded on use: the node may not import the worker, and
    ``triphase --help`` must not load grouping, so the worker hands the node this factory."""
    readiness = importlib.import_module("worker.grouping.readiness")
    check: RoleCheck = readiness.role_check_for(runtime)
    return check


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
    cls=LazyGroup,
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
        runtime.section(section)
    level = "DEBUG" if debug else runtime.general.log_level.upper()
    configure_logging(level)
    ctx.obj = runtime
    ctx.meta[ROLE_CHECK_FACTORY] = role_check_factory  # the node completes a study when it is whole
    ctx.call_on_close(runtime.close)


config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _masked(section: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Every URL with its secrets hidden, and every setting whose name says it is a secret."""
    masked: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            masked[name] = _masked(name, value)
        elif isinstance(value, list):  # tables in arrays, such as [[worker.destinations]]
            masked[name] = [_masked(name, item) if isinstance(item, dict) else item for item in value]
        elif isinstance(value, str) and value and is_secret_name(name):
            masked[name] = MASK
        elif isinstance(value, str) and "://" in value:
            masked[name] = mask_url(value)
        else:
            masked[name] = value
    return masked


def effective_configuration(runtime: Runtime) -> dict[str, object]:
    """Every section as the program sees it (file + environment + defaults), secrets masked."""
    top: dict[str, object] = {}
    tables: dict[str, dict[str, object]] = {}
    for cls in SECTIONS:
        values = _masked(cls.section, runtime.section(cls).model_dump(mode="json"))
        if cls.section is None:
            top.update(values)
        else:
            tables[cls.section] = values
    tables["db"]["effective_url"] = mask_url(runtime.section(DbSettings).effective_url(runtime.general))
    return top | tables


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


def _to_toml(data: Mapping[str, object]) -> str:
    """TOML for display. TOML has no null, so settings left unset are left out."""
    return tomli_w.dumps(_set_values(data)).rstrip("\n")


def _set_values(table: Mapping[str, object]) -> dict[str, object]:
    return {key: _set_value(value) for key, value in table.items() if value is not None}


def _set_value(value: object) -> object:
    if isinstance(value, Mapping):
        return _set_values(value)
    if isinstance(value, list):
        return [_set_value(item) for item in value]
    return value
