"""The tasks the papers define: their class lists and default channel recipes (R, G, B)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    classes: tuple[str, ...]
    channel_recipe: tuple[str, str, str]


KNOWN_TASKS: tuple[TaskDefinition, ...] = (
    TaskDefinition("ct-histology", ("early_hcc", "well_hcc", "moderate_hcc", "poor_hcc", "non_hcc_cc"),
                   ("arterial", "delayed", "pre")),
    TaskDefinition("mri-ehcc", ("early_hcc", "progressed_hcc"), ("arterial", "t2_haste", "t1_in")),
)


def known_task(name: str) -> TaskDefinition | None:
    return next((task for task in KNOWN_TASKS if task.name == name), None)
