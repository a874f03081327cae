"""``triphase evaluate``: the numbers of one evaluation, per model version, as one JSON document.

The JSON is the single source; the HTML and CSV are renderings of it, so they cannot disagree.
Readers are compared with the model on the same cases: for each reader group, the model's metrics
restricted to the lesions that group read, and ``reader_comparison``: a multi-reader multi-case
analysis of the model against each group and a paired accuracy test against each reader
(:mod:`worker.evaluation.reader_comparison`). The readers are never averaged into one score.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from db.engine import Database
from db.queries import job_outcomes
from models.evaluation.baseline import majority_predictions, majority_scores
from models.evaluation.metrics import grade_scale
from models.evaluation.summary import BootstrapSettings, summarise
from models.tasks import known_task
from worker.evaluation.cases import ModelCases, Read, load_cases, load_reads, reader_scores
from worker.evaluation.checks import ABSTENTION_NOTE, add_checks, select_cases
from worker.evaluation.document import (
    ModelSection,
    ReaderEntry,
    ReaderGroup,
    ReadersSection,
    Report,
    StateCounts,
    json_ready,
)
from worker.evaluation.reader_comparison import compare_readers

INDETERMINATE = "indeterminate"
DEFAULT_BOOTSTRAP = BootstrapSettings()
INTERVAL_RULE = ("BCa (bias correction from the replicates, ties half; acceleration from the leave-one-patient-out "
                 "jackknife) where defined, else percentile; each interval's ci_method says which")


def skipped_studies(database: Database, *, since: dt.datetime | None,
                    until: dt.datetime | None) -> dict[str, StateCounts]:
    """Studies whose latest job was skipped or failed, counted by state and reason."""
    counts: dict[str, Counter[str]] = {"skipped": Counter(), "failed": Counter()}
    for _, state, reason in job_outcomes(database, since=since, until=until):
        counts[state][reason or "no reason recorded"] += 1
    return {state: {"studies": sum(c.values()), "reasons": dict(c.most_common())} for state, c in counts.items()}


def reader_section(cases: ModelCases, reads: dict[tuple[str, str], list[Read]],
                   settings: BootstrapSettings) -> ReadersSection:
    """Each reader group and reader on the model's cases, with the model on the same cases."""
    index = {key: i for i, key in enumerate(cases.keys())}
    per_row: list[tuple[int, Read]] = [(index[key], read) for key, rs in reads.items() if key in index for read in rs]
    groups: dict[str, ReaderGroup] = {}
    readers: dict[str, ReaderEntry] = {}
    for group in sorted({read.reader_group for _, read in per_row}):
        mine = [(i, r) for i, r in per_row if r.reader_group == group]
        rows = np.array([i for i, _ in mine])
        scores = np.array([reader_scores(r.label, r.confidence, cases.classes) for _, r in mine])
        group_summary = summarise(cases.y_true[rows], np.array([r.label for _, r in mine], dtype=object),
                                  cases.patient_ids[rows], labels=cases.classes, y_score=scores,
                                  settings=settings, curves=False)
        lesions = np.unique(rows)
        model_same = summarise(cases.y_true[lesions], cases.y_pred[lesions], cases.patient_ids[lesions],
                               labels=cases.classes, y_score=cases.scores[lesions], settings=settings, curves=False)
        groups[group] = {"readers": sorted({r.reader_id for _, r in mine}), "reads": len(mine),
                         "summary": group_summary, "model_on_same_cases": model_same}
        for reader_id in sorted({r.reader_id for _, r in mine}):
            own = [(i, r) for i, r in mine if r.reader_id == reader_id]
            rows_r = np.array([i for i, _ in own])
            readers[reader_id] = {"group": group, "summary": summarise(
                cases.y_true[rows_r], np.array([r.label for _, r in own], dtype=object), cases.patient_ids[rows_r],
                labels=cases.classes,
                y_score=np.array([reader_scores(r.label, r.confidence, cases.classes) for _, r in own]),
                settings=settings, curves=False)}
    return {"groups": groups, "readers": readers,
            "score_rule": "a read scores its confidence on the called class and shares the rest equally; "
                          "no confidence = 1. A group's summary pools its reads; reader_comparison keeps "
                          "each reader's own figure of merit."}


def model_section(cases: ModelCases, reads: dict[tuple[str, str], list[Read]] | None,
                  settings: BootstrapSettings) -> ModelSection:
    section: ModelSection = {"model": cases.model, "task": cases.task, "classes": cases.classes,
                               "left_out": dict(cases.left_out.most_common()),
                               "indeterminate": int(np.sum(cases.y_pred == INDETERMINATE)), "summary": None}
    if len(cases) == 0:
        return section
    scale = grade_scale(cases.classes) if known_task(cases.task) is not None else None
    section["summary"] = summarise(cases.y_true, cases.y_pred, cases.patient_ids, labels=cases.classes,
                                   y_score=cases.scores, settings=settings, scale=scale)
    baseline = majority_predictions(cases.y_true)
    section["majority_baseline"] = {
        "class": str(baseline[0]),
        "summary": summarise(cases.y_true, baseline, cases.patient_ids, labels=cases.classes,
                             y_score=majority_scores(cases.y_true, labels=cases.classes), settings=settings,
                             curves=False)}
    if reads is not None:
        section["readers"] = reader_section(cases, reads, settings)
        section["reader_comparison"] = compare_readers(cases, reads, settings)
    return section


def evaluate(database: Database, *, model: str | None = None, task: str | None = None,
             since: dt.datetime | None = None, until: dt.datetime | None = None, readers: bool = True,
             settings: BootstrapSettings = DEFAULT_BOOTSTRAP, models_dir: Path | None = None,
             include_training: bool = False) -> Report:
    """The whole evaluation as a JSON-ready document (NaN as null); lesions of each model's training
    patients (found through its artifact in ``models_dir``) are left out unless ``include_training``."""
    selected = [select_cases(c, models_dir, include_training=include_training)
                for c in load_cases(database, model=model, task=task, since=since, until=until)]
    reads = load_reads(database) if readers else None
    sections = []
    for cases, training in selected:
        sections.append(model_section(cases, reads, settings))
        add_checks(sections[-1], cases, training)
    document: Report = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "filters": {"model": model, "task": task, "since": since.isoformat() if since else None,
                    "until": until.isoformat() if until else None, "readers": readers,
                    "include_training": include_training},
        "bootstrap": asdict(settings) | {"unit": "patient", "interval": INTERVAL_RULE},
        "label_metrics_note": ABSTENTION_NOTE,
        "resubstitution": include_training,
        "excluded_training_lesions": sum(t["excluded_training_lesions"] for _, t in selected),
        "reader_comparison": [row for section in sections for row in section.get("reader_comparison", [])],
        "skipped_studies": skipped_studies(database, since=since, until=until),
        "models": sections,
    }
    ready: Report = json_ready(document)
    return ready
