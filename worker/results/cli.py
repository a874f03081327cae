"""``triphase analyze`` (the whole pipeline on study folders, offline) and ``triphase resend``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from db.repository import Repository
from db.runtime import Runtime
from models.architectures import default_registry
from models.artifact import resolve_artifact
from models.inference import Classifier
from worker.analysis import analyse_study
from worker.grouping import load_rules
from worker.grouping.series_info import scan_studies
from worker.results.algorithm import algorithm_for
from worker.results.identity import device_uid
from worker.settings import GroupingSettings, ModelsSection


def analyze(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="study folders or files", exists=True)],
    model: Annotated[str, typer.Option("--model", help="model artifact folder or hash prefix")],
    out: Annotated[Path, typer.Option("--out", help="where the SR, SC and summary go")],
    tta: Annotated[bool, typer.Option("--tta", help="test-time augmentation")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda[:N]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable summary")] = False,
) -> None:
    """Group, composite, classify and write a TID 1500 SR + Secondary Capture per study."""
    runtime: Runtime = ctx.obj
    rules = load_rules(runtime.section(GroupingSettings).rules)
    artifact = resolve_artifact(model, runtime.general.models_dir)
    classifier = Classifier(artifact, registry=default_registry(),
                            device=device or runtime.section(ModelsSection).device)
    algorithm = algorithm_for(artifact)
    device_id = device_uid(runtime.general.data_dir)
    scan = scan_studies(paths)
    if not scan.series:
        typer.echo("no DICOM studies found", err=True)
        raise typer.Exit(1)
    summaries = []
    for uid, series in sorted(scan.series.items()):
        result = analyse_study(uid, series, rules, classifier=classifier, algorithm=algorithm,
                               device_uid=device_id, tta=tta)
        folder = out / uid
        written = []
        if result.sr is not None:
            folder.mkdir(parents=True, exist_ok=True)
            result.sr.save_as(folder / "SR.dcm", enforce_file_format=True)
            written.append(str(folder / "SR.dcm"))
            for sc, lesion in zip(result.scs, result.lesions, strict=True):
                path = folder / f"SC_{lesion.lesion_id}.dcm"
                sc.save_as(path, enforce_file_format=True)
                written.append(str(path))
        summary = result.as_json() | {"model": artifact.hash, "files": written}
        summaries.append(summary)
        if not as_json:
            if result.outcome == "skipped":
                typer.echo(f"study {uid}: skipped: {result.reason}")
            for lesion in result.lesions:
                probabilities = ", ".join(f"{k} {v:.2f}" for k, v in lesion.probabilities.items())
                typer.echo(f"study {uid} lesion {lesion.lesion_id}: {lesion.label} ({probabilities}; "
                           f"ROI {lesion.roi_source})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2, ensure_ascii=False))
    if as_json:
        typer.echo(json.dumps(summaries, indent=2, ensure_ascii=False))
    else:
        typer.echo(f"results in {out} (model {artifact.short_hash}; not for diagnostic use)")


def resend(ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="job number (see triphase studies)")]
           ) -> None:
    """Queue a sent, failed or analysed job's results for sending again (same UIDs: replaces, never duplicates)."""
    runtime: Runtime = ctx.obj
    Repository(runtime.database()).requeue_send(job_id)
    typer.echo(f"job #{job_id} queued for sending again")
