"""The evaluation's honesty checks beside the metrics: training overlap, coverage, calibration.

- Training overlap: lesions of the model's own training patients or studies are left out unless
  the user opts in, and the count is reported (``excluded_training_lesions``); opting in marks the
  report as resubstitution.
- Coverage: answered and abstained lesions, selective accuracy and accuracy with abstentions as
  wrong (models/abstention.py holds the one definition used by cross-validation too).
- Calibration: class-wise reliability of the stored probabilities (models/calibration.py), which a
  top-label reliability diagram hides: a rare class can be several times too probable on average
  while the top-label ECE stays small.
"""

from __future__ import annotations

from pathlib import Path

from models.abstention import coverage
from models.calibration import RELIABILITY_BINS, per_class_reliability
from models.evaluation.metrics import encode
from worker.evaluation.cases import ModelCases, training_overlap
from worker.evaluation.document import CalibrationSection, ModelSection, TrainingCheck

ABSTENTION_NOTE = ("an indeterminate (abstained) prediction counts as wrong for accuracy, recall, balanced "
                  "accuracy and F1 (all lesions); it calls no class, so it is a true negative in the other classes' "
                  "one-vs-rest specificity; kappa is over the answered lesions, beside the coverage; the "
                  "confusion matrix holds every lesion, abstentions in its indeterminate column")
CALIBRATION_DEFINITION = ("per class, one-vs-rest over all evaluated lesions: mean predicted probability vs "
                          "observed rate, and the class-wise ECE (equal-width bins, each bin's gap weighted by "
                          "its share of the lesions); n = lesions of the class")


def select_cases(cases: ModelCases, models_dir: Path | None, *, include_training: bool
                 ) -> tuple[ModelCases, TrainingCheck]:
    """The cases to score and what was found of the model's training lesions among them."""
    overlap = training_overlap(cases, models_dir)
    found = int(overlap.in_training.sum())
    keys: TrainingCheck = {"training_check": overlap.check, "resubstitution": include_training,
                           "excluded_training_lesions": 0 if include_training else found,
                           "training_lesions_included": found if include_training else 0}
    if include_training or not found:
        return cases, keys
    return cases.subset(~overlap.in_training), keys


def calibration_section(cases: ModelCases) -> CalibrationSection:
    return {"per_class": per_class_reliability(encode(cases.y_true, cases.classes), cases.scores, cases.classes),
            "lesions": len(cases), "bins": RELIABILITY_BINS, "definition": CALIBRATION_DEFINITION}


def add_checks(section: ModelSection, cases: ModelCases, training: TrainingCheck) -> None:
    """Coverage, class-wise calibration and the training-overlap keys, into a model's section."""
    section["training_check"] = training["training_check"]
    section["resubstitution"] = training["resubstitution"]
    section["excluded_training_lesions"] = training["excluded_training_lesions"]
    section["training_lesions_included"] = training["training_lesions_included"]
    section["coverage"] = coverage(cases.y_true, cases.y_pred)
    if len(cases):
        section["calibration"] = calibration_section(cases)
