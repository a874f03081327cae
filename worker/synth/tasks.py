"""Tasks, class labels, roles and the difficulty knob, as named in the shared contracts."""

from __future__ import annotations

from dataclasses import dataclass

CT_TASK = "ct-histology"
MRI_TASK = "mri-ehcc"


@dataclass(frozen=True)
class TaskSpec:
    """What a task's studies hold: the labels (with the paper's class mix) and the roles."""

    name: str
    modality: str
    labels: tuple[str, ...]
    proportions: tuple[int, ...]
    roles: tuple[str, ...]
    reference_role: str
    """The role whose images the SEG references and in whose position the truth is given."""
    lesion_size_mm: tuple[float, float]


TASKS: dict[str, TaskSpec] = {
    CT_TASK: TaskSpec(
        name=CT_TASK,
        modality="CT",
        labels=("early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"),
        # Yamada et al. 2019: 6/58/109/29/13 patients.
        proportions=(6, 58, 109, 29, 13),
        roles=("pre", "arterial", "portal", "delayed"),
        reference_role="portal",
        lesion_size_mm=(12.0, 45.0),
    ),
    MRI_TASK: TaskSpec(
        name=MRI_TASK,
        modality="MR",
        labels=("early_hcc", "progressed_hcc"),
        proportions=(23, 23),
        roles=("t1_in", "t1_out", "t2_haste", "t2_fse", "dwi", "pre", "arterial", "portal",
               "transitional", "hepatobiliary"),
        reference_role="hepatobiliary",
        # The MRI study is of HCC of 2 cm or less.
        lesion_size_mm=(8.0, 20.0),
    ),
}

DIFFICULTY_LEVELS: dict[str, float] = {"easy": 0.15, "medium": 0.5, "hard": 1.0}


def parse_difficulty(value: str | float) -> float:
    """A named level or a number in [0, 1]; larger means more overlap between classes.

    At 1.0 the per-lesion spread of every kinetic parameter is as wide as the gap between
    neighbouring classes, so no classifier can separate them perfectly.
    """
    if isinstance(value, str):
        key = value.strip().lower()
        if key in DIFFICULTY_LEVELS:
            return DIFFICULTY_LEVELS[key]
        try:
            number = float(key)
        except ValueError:
            raise ValueError(f"difficulty must be easy, medium, hard or a number in [0, 1], not {value!r}") from None
    else:
        number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], not {number}")
    return number


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}") from None
