"""What gets evaluated: the model's predictions joined to the truth, and readers' reads on them.

Predictions come from the ``predictions`` table only (the audit trail), joined to the truth by
(study UID, lesion id); the patient is the study's, falling back to the truth's. A lesion predicted
again (a later revision or a re-run) counts once, with its latest prediction. Everything left out
is counted with its reason so the report can say what it did not see.

Lesions of the model's own training patients or studies are left out by default (the artifact's
manifest holds their salted hashes): scoring them would report resubstitution metrics, with
confidence intervals, as if they were a validation. ``--include-training`` keeps them, and the
report is then marked as resubstitution.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from db.engine import Database
from db.queries import PredictionRow, prediction_rows, reader_reads, truth_rows
from models.artifact import ArtifactError, TrainingMembership, resolve_artifact
from models.tasks import known_task


@dataclass
class ModelCases:
    """One model version's evaluated lesions, aligned row by row."""

    model: str
    task: str
    classes: list[str]
    study_uids: np.ndarray
    lesion_ids: np.ndarray
    patient_ids: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray  # a class, or "indeterminate"
    scores: np.ndarray  # (n, len(classes)) probabilities
    left_out: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.y_true.size)

    def keys(self) -> list[tuple[str, str]]:
        return list(zip(self.study_uids.tolist(), self.lesion_ids.tolist(), strict=True))

    def subset(self, keep: np.ndarray) -> ModelCases:
        """The same cases restricted to the rows where ``keep`` is true."""
        return replace(self, study_uids=self.study_uids[keep], lesion_ids=self.lesion_ids[keep],
                       patient_ids=self.patient_ids[keep], y_true=self.y_true[keep], y_pred=self.y_pred[keep],
                       scores=self.scores[keep], left_out=Counter(self.left_out))


@dataclass(frozen=True)
class TrainingOverlap:
    """What is known of the overlap between a model's training data and its evaluated lesions."""

    check: str  # how it was checked, or why it could not be
    in_training: np.ndarray  # bool per case: its patient or study was trained on


def training_overlap(cases: ModelCases, models_dir: Path | None) -> TrainingOverlap:
    """Which cases belong to the model's training patients or studies, by the artifact's hashes."""
    none = np.zeros(len(cases), dtype=bool)
    if models_dir is None:
        return TrainingOverlap("not checked: no models folder", none)
    try:
        artifact = resolve_artifact(cases.model, models_dir)
    except ArtifactError as exc:
        return TrainingOverlap(f"not checked: {exc}", none)
    membership = TrainingMembership.of(artifact.manifest)
    if membership is None:
        return TrainingOverlap("not checked: the artifact does not record its training patients", none)
    flags = [membership.contains(patient_id=str(p) if p else None, study_uid=str(s))
             for p, s in zip(cases.patient_ids.tolist(), cases.study_uids.tolist(), strict=True)]
    return TrainingOverlap("checked against the salted hashes of the training patients and studies in the "
                           "artifact's manifest", np.asarray(flags, dtype=bool).reshape(len(cases)))


@dataclass(frozen=True)
class Read:
    reader_id: str
    reader_group: str
    label: str
    confidence: float | None


def _classes(task: str, rows: list[PredictionRow]) -> list[str]:
    definition = known_task(task)
    if definition is not None:
        return list(definition.classes)
    return list(rows[0].probabilities)


def load_cases(database: Database, *, model: str | None = None, task: str | None = None,
               since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[ModelCases]:
    """One :class:`ModelCases` per (model, task) among the selected predictions."""
    truth = {(t.study_uid, t.lesion_id): t for t in truth_rows(database)}
    latest: dict[tuple[str, str, str, str], PredictionRow] = {}
    superseded: Counter[tuple[str, str]] = Counter()
    for row in prediction_rows(database, model=model, task=task, since=since, until=until):
        key = (row.model, row.task, row.study_uid, row.lesion_id)
        if key in latest:
            superseded[(row.model, row.task)] += 1
        latest[key] = row  # ordered by id: the last one wins
    grouped: dict[tuple[str, str], list[PredictionRow]] = {}
    for (model_hash, task_name, _, _), row in latest.items():
        grouped.setdefault((model_hash, task_name), []).append(row)
    out = []
    for (model_hash, task_name), rows in sorted(grouped.items()):
        classes = _classes(task_name, rows)
        left_out: Counter[str] = Counter()
        if superseded[(model_hash, task_name)]:
            left_out["earlier prediction of the same lesion (latest kept)"] = superseded[(model_hash, task_name)]
        kept = []
        for row in rows:
            truth_row = truth.get((row.study_uid, row.lesion_id))
            if truth_row is None:
                left_out["no ground truth for the lesion"] += 1
            elif truth_row.label not in classes:
                left_out[f"ground truth {truth_row.label!r} is not a class of the model"] += 1
            elif set(row.probabilities) != set(classes):
                left_out["probabilities do not cover the task's classes"] += 1
            else:
                kept.append((row, truth_row))
        if not kept:
            scores = np.zeros((0, len(classes)))
        else:
            scores = np.array([[float(r.probabilities[c]) for c in classes] for r, _ in kept])
        out.append(ModelCases(
            model=model_hash, task=task_name, classes=classes,
            study_uids=np.array([r.study_uid for r, _ in kept], dtype=object),
            lesion_ids=np.array([r.lesion_id for r, _ in kept], dtype=object),
            patient_ids=np.array([r.patient_id or t.patient_id for r, t in kept], dtype=object),
            y_true=np.array([t.label for _, t in kept], dtype=object),
            y_pred=np.array([r.label for r, _ in kept], dtype=object),
            scores=scores, left_out=left_out))
    return out


def load_reads(database: Database) -> dict[tuple[str, str], list[Read]]:
    """Readers' reads by (study UID, lesion id)."""
    out: dict[tuple[str, str], list[Read]] = {}
    for row in reader_reads(database):
        out.setdefault((row.study_uid, row.lesion_id), []).append(
            Read(row.reader_id, row.reader_group, row.label, row.confidence))
    return out


def reader_scores(label: str, confidence: float | None, classes: list[str]) -> np.ndarray:
    """A read as class scores: its confidence on the called class, the rest shared by the others.

    Without a confidence the call is certain (1 / 0), which makes the reader's AUC that of a
    single operating point, as in reader studies without a rating scale.
    """
    confidence = 1.0 if confidence is None else float(confidence)
    scores = np.full(len(classes), (1.0 - confidence) / max(1, len(classes) - 1))
    if label in classes:
        scores[classes.index(label)] = confidence
    return scores
