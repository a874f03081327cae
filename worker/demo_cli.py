"""``triphase demo``: the whole loop with no servers (see worker/demo.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from db.runtime import Runtime

app = typer.Typer()


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="demo folder (default <data_dir>/demo; replaced)")] = None,
    studies: Annotated[int, typer.Option(min=1, max=20, help="studies sent to the node")] = 4,
    training: Annotated[int, typer.Option(min=10, max=200, help="studies the demo model is trained on")] = 25,
    seed: Annotated[int, typer.Option(help="synthetic data seed")] = 0,
) -> None:
    """Run the whole loop on synthetic studies: receive, group, composite, classify, SR + SC, evaluate."""
    from rich.console import Console  # noqa: PLC0415

    from worker.demo import run_demo  # noqa: PLC0415

    runtime: Runtime = ctx.obj
    console = Console(soft_wrap=True)  # a path is never broken across lines, piped or not
    folder = out or runtime.general.data_dir / "demo"
    result = run_demo(folder, train_studies=training, demo_studies=studies, seed=seed,
                      say=lambda text: console.print(text, highlight=False, markup=False))
    console.print("4. Results (research use only; NOT FOR DIAGNOSTIC USE)", highlight=False, markup=False)
    for study in result.studies:
        console.print(f"   Study {study['study_uid']} (job #{study['job']}, completed by "
                      f"{study['completed_by'] or '?'}): {study['state']}"
                      + (f" - {study['reason']}" if study['reason'] and study['state'] != 'sent' else ""),
                      highlight=False, markup=False)
        if study["roles"]:
            found = ", ".join(f"{role} = {desc!r}" for role, desc in study["roles"].items() if desc)
            console.print("     phases found: " + found, highlight=False, markup=False)
        for lesion in study["lesions"]:
            p = lesion["probabilities"]
            top = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in sorted(p.items(), key=lambda kv: -kv[1])[:3])
            console.print(f"     lesion {lesion['lesion_id']} (location from {lesion['roi']}): predicted "
                          f"{lesion['predicted'].replace('_', ' ')}, pathology (synthetic truth) "
                          f"{(lesion['truth'] or '?').replace('_', ' ')}  [{top}]", highlight=False, markup=False)
        for item in study["stored"]:
            console.print(f"     {item['object']} stored in the stand-in PACS: {item['path']}", highlight=False,
                          markup=False)
    if result.accuracy is not None:
        console.print(f"5. Evaluation on {sum(len(s['lesions']) for s in result.studies)} lesions: accuracy "
                      f"{result.accuracy:.2f} (always answering the most common class would score "
                      f"{result.majority_baseline:.2f}); a handful of lesions says little - use "
                      f"`triphase train` and the evaluation tools on real cohorts.", highlight=False, markup=False)
    console.print(f"   Secondary Captures as PNG in {result.folder / 'png'}; everything in {result.folder}; "
                  f"model {result.model[:12]}; {result.elapsed_s:.0f} s.", highlight=False, markup=False)
    if not result.studies or any(s["state"] not in ("sent", "shadowed", "skipped") for s in result.studies):
        raise typer.Exit(1)
