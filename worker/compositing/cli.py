"""``triphase composite``: write the composites of a study as PNG with a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, cast

import typer
from PIL import Image

from db.runtime import Runtime
from worker.grouping import load_rules
from worker.settings import GroupingSettings
from worker.study_composites import Fallback, build_composites


def composite(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="study folders or files", exists=True)],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    size: Annotated[int, typer.Option(help="composite size in pixels (224; 299 for Inception-v3)")] = 224,
    register: Annotated[bool, typer.Option("--register/--no-register",
                                           help="rigid registration in a lesion-centred box")] = True,
    fallback: Annotated[str, typer.Option(help="without a SEG: 'centre' crop (declared) or 'skip'")] = "centre",
    neighbours: Annotated[int, typer.Option(min=0, max=5,
                                            help="also composite this many slices each side of the largest")] = 0,
    rules_file: Annotated[Path | None, typer.Option("--rules", help="grouping rules file (TOML)")] = None,
) -> None:
    """Group, align and composite each study; one PNG + JSON per lesion, for people to look at."""
    if fallback not in ("centre", "skip"):
        raise typer.BadParameter("--fallback is 'centre' or 'skip'")
    runtime: Runtime = ctx.obj
    rules = load_rules(rules_file or runtime.section(GroupingSettings).rules)
    results = build_composites(paths, rules, size=size, register=register, fallback=cast(Fallback, fallback),
                               neighbours=neighbours)
    out.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for uid, study in results.items():
        if study.skipped:
            skipped += 1
            typer.echo(f"study {uid}: skipped: {study.skipped}", err=True)
            continue
        for item in study.composites:
            stem = f"{uid}_{item.lesion.lesion_id}" + (f"_s{item.slice_index:03d}" if neighbours else "")
            Image.fromarray(item.composite.rgb).save(out / f"{stem}.png")
            (out / f"{stem}.json").write_text(json.dumps(study.sidecar(item), indent=2, ensure_ascii=False))
            written += 1
            typer.echo(f"{stem}.png  ({item.lesion.source.value}; R,G,B = {', '.join(study.recipe.channels)})")
    typer.echo(f"{written} composites written to {out}, {skipped} studies skipped")
    if not written and skipped:
        raise typer.Exit(1)
