"""``triphase groups``: the rule tester a site runs on a real study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from db.runtime import Runtime
from worker.grouping import group_paths, load_rules
from worker.settings import GroupingSettings


def groups(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="study folders or files", exists=True)],
    rules_file: Annotated[Path | None, typer.Option(
        "--rules", help="rules file (TOML); default [grouping] rules")] = None,
    task: Annotated[str | None, typer.Option(help="force a task instead of choosing by modality")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Show which series plays which role (or why it was excluded), per study."""
    runtime: Runtime = ctx.obj
    rules = load_rules(rules_file or runtime.section(GroupingSettings).rules)
    results = group_paths(paths, rules, task)
    if as_json:
        typer.echo(json.dumps({uid: g.as_json() for uid, g in results.items()}, indent=2, ensure_ascii=False))
        return
    if not results:
        typer.echo("no DICOM studies found", err=True)
        raise typer.Exit(1)
    for uid, grouping in results.items():
        typer.echo(f"study {uid}: task {grouping.task or '-'}, {grouping.outcome.value}  (rules: {rules.source})")
        for role, match in grouping.roles.items():
            if match is None:
                typer.echo(f"  {role:14s} -")
                continue
            part = f" acquisition {match.series.acquisition_number}" if match.series.acquisition_number else ""
            typer.echo(f"  {role:14s} {match.series.description!r}{part}  score {match.score:.1f}")
            for reason in match.reasons:
                typer.echo(f"  {'':14s}   - {reason}")
        for series_uid, reason in grouping.excluded.items():
            typer.echo(f"  excluded {series_uid}: {reason}")
        for problem in grouping.problems:
            typer.echo(f"  note: {problem}")
