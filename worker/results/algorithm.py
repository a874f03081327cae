"""How the outputs name the model that produced them: the algorithm of the SR, SC and audit.

Kept apart from the DICOM writers (and from highdicom) so that a task body and a command can both
name the algorithm of an artifact without importing the writers or each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from models.artifact import Artifact


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str
    version: str  # the model artifact's content hash
    software_version: str
    parameters: dict[str, str] = field(default_factory=dict)


def software_version() -> str:
    """This installation's triphase version, or ``0+unknown`` when run from a bare checkout."""
    try:
        return version("triphase")
    except PackageNotFoundError:
        return "0+unknown"


def _architecture(manifest: dict[str, object]) -> str:
    architecture = manifest.get("architecture")
    return str(architecture["name"]) if isinstance(architecture, dict) else str(architecture)


def algorithm_for(artifact: Artifact) -> AlgorithmInfo:
    """Architecture and task as the name, the artifact's content hash as the version."""
    manifest = artifact.manifest
    training = manifest.get("training", {}).get("config", {})
    parameters = {"architecture": _architecture(manifest),
                  "mode": str(manifest.get("mode", training.get("mode", ""))),
                  "channels": ",".join(manifest["input"]["channel_recipe"]),
                  "abstain_below": str(manifest.get("abstention_threshold", 0.0))}
    return AlgorithmInfo(name=f"triphase {parameters['architecture']} {manifest['task']}", version=artifact.hash,
                         software_version=software_version(), parameters=parameters)
