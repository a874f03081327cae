"""Model artifacts: an immutable folder named by the sha256 of its content.

The manifest is what the worker, the SR and the audit quote, so it must say exactly what a result
came from: architecture, classes, task, channel recipe and preprocessing, starting weights, training
data, cross-validation metrics, calibration, library versions. Its canonical JSON lists the sha256 of
every other file in the folder, and the folder's name is the sha256 of that canonical JSON: changing
any byte of the weights or any field of the manifest changes the name. Files are written into a
temporary folder, made read-only and renamed into place in one step; an existing artifact is never
overwritten.

The manifest also records who the model was trained on, as salted SHA-256 hashes of the training
patients' and studies' ids (a fresh random salt per artifact, stored beside them): enough for
``evaluate`` to leave those patients out (no resubstitution metrics by accident), useless for
finding a patient across artifacts or guessing an id from a list without the salt of the artifact.

``svm.pkl`` (SVM mode) is a pickle: it is only unpickled after the folder's hash has been verified,
i.e. only from an artifact this installation wrote or one whose hash the operator chose to trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import platform
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from models.weights import RANDOM_INIT, WeightsOriginJson, sha256_file

if TYPE_CHECKING:
    from models.training import (
        AbstentionReport,
        CalibrationReport,
        CrossValidationReport,
        DataSummary,
        FinalFit,
        TrainedModel,
        TrainingConfigJson,
        TrainingIds,
    )
    from models.transforms import PreprocessingJson

MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
SVM = "svm.pkl"
FORMAT = "triphase-model/1"
HASH_LENGTH = 64
RANDOM_INIT_WARNING = ("RANDOM INITIALISATION: this model was trained from random weights, not ImageNet; "
                       "it does not reproduce the papers' transfer learning")


class ArtifactError(ValueError):
    """An artifact is missing, ambiguous, malformed or fails its hash check."""


class ManifestInput(TypedDict):
    """How a study becomes the network's input: the recipe, the caller's windowing, the preprocessing."""

    channel_recipe: list[str]
    channels: list[str]
    windowing: dict[str, object]
    preprocessing: PreprocessingJson


class TrainingSubjects(TypedDict):
    """``training.subjects``: salted hashes of the training patients' and studies' ids."""

    hash: str
    salt: str
    patients: list[str]
    studies: list[str]


class ManifestTraining(TypedDict):
    config: TrainingConfigJson
    data: DataSummary
    final_fit: FinalFit
    subjects: TrainingSubjects


class Manifest(TypedDict):
    """``manifest.json`` as this version writes it (:func:`build_manifest`)."""

    format: str
    task: str
    classes: list[str]
    architecture: str
    mode: str
    input: ManifestInput
    weights_origin: WeightsOriginJson
    random_init: bool
    warnings: list[str]
    training: ManifestTraining
    cv: CrossValidationReport
    calibration: CalibrationReport
    abstention_threshold: float
    abstention: NotRequired[AbstentionReport]
    files: dict[str, str]
    versions: dict[str, str]
    created_at: str


def canonical_json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def content_hash(manifest: Mapping[str, object]) -> str:
    """The artifact's identity: sha256 of the canonical manifest, which holds every file's sha256."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


SUBJECT_HASH = "sha256(salt + id), hex"


def subject_hash(salt: str, identifier: str) -> str:
    """SHA-256 of the salt followed by the id (UTF-8), hex: how the manifest stores an id."""
    return hashlib.sha256((salt + identifier).encode("utf-8")).hexdigest()


def training_subjects(ids: TrainingIds) -> TrainingSubjects:
    """The hashes of ``ids`` with their salt (128 random bits drawn at training), sorted."""
    salt = ids.salt
    return {"hash": SUBJECT_HASH, "salt": salt,
            "patients": sorted({subject_hash(salt, p) for p in ids.patients}),
            "studies": sorted({subject_hash(salt, s) for s in ids.studies})}


@dataclass(frozen=True)
class TrainingMembership:
    """Whether a patient or a study was among an artifact's training data, by salted hash."""

    salt: str
    patients: frozenset[str]
    studies: frozenset[str]

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> TrainingMembership | None:
        """The membership test of a manifest; None for an artifact that did not record it."""
        subjects = manifest.get("training", {}).get("subjects")
        if not isinstance(subjects, Mapping) or subjects.get("hash") != SUBJECT_HASH:
            return None
        return cls(str(subjects["salt"]), frozenset(subjects.get("patients", [])),
                   frozenset(subjects.get("studies", [])))

    def contains(self, *, patient_id: str | None, study_uid: str | None) -> bool:
        """True when the patient or the study was trained on."""
        return bool((patient_id and subject_hash(self.salt, patient_id) in self.patients)
                    or (study_uid and subject_hash(self.salt, study_uid) in self.studies))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "scikit-learn", "numpy", "triphase"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def build_manifest(trained: TrainedModel, *, task: str, channel_recipe: list[str],
                   windowing: Mapping[str, object] | None, files: dict[str, str],
                   created_at: datetime | None = None) -> Manifest:
    """The manifest of ``trained``; ``windowing`` is what the caller did before the model, verbatim."""
    if len(channel_recipe) != 3:
        raise ValueError(f"a channel recipe names 3 roles (R, G, B), got {channel_recipe}")
    random_init = trained.weights_origin.kind == RANDOM_INIT
    return {
        "format": FORMAT,
        "task": task,
        "classes": list(trained.classes),
        "architecture": trained.spec.name,
        "mode": trained.config.mode,
        "input": {"channel_recipe": list(channel_recipe), "channels": ["R", "G", "B"],
                  "windowing": dict(windowing or {}), "preprocessing": trained.preprocessing.to_dict()},
        "weights_origin": trained.weights_origin.to_dict(),
        "random_init": random_init,
        "warnings": [RANDOM_INIT_WARNING] if random_init else [],
        "training": {"config": trained.config.to_dict(), "data": trained.data_summary,
                     "final_fit": trained.final_fit, "subjects": training_subjects(trained.training_ids)},
        "cv": trained.cv,
        "calibration": trained.calibration,
        "abstention_threshold": trained.abstention["threshold"],
        "abstention": trained.abstention,
        "files": dict(sorted(files.items())),
        "versions": library_versions(),
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class Artifact:
    """A model folder and its manifest as stored: JSON read from disk, which may come from an older
    writer than :class:`Manifest` describes, so readers look fields up defensively."""

    path: Path
    manifest: dict[str, Any]

    @property
    def hash(self) -> str:
        return self.path.name

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])


def _make_read_only(folder: Path) -> None:
    for child in folder.iterdir():
        child.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def publish(staging: Path, manifest: Manifest, models_dir: Path) -> Artifact:
    """Write ``manifest.json`` beside the files in ``staging``, verify, and rename into place."""
    for name, digest in manifest["files"].items():
        if sha256_file(staging / name) != digest:
            raise ArtifactError(f"{name} changed while the artifact was being written")
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n",
                                    encoding="utf-8")
    for child in staging.iterdir():
        _fsync_file(child)
    digest = content_hash(manifest)
    target = models_dir / digest
    if target.exists():
        raise FileExistsError(f"model artifact {digest[:12]} already exists at {target}; artifacts are immutable")
    _make_read_only(staging)
    os.rename(staging, target)
    return Artifact(target, dict(manifest))


def save_trained(trained: TrainedModel, models_dir: Path, *, task: str, channel_recipe: list[str],
                 windowing: Mapping[str, object] | None = None, created_at: datetime | None = None) -> Artifact:
    """Write ``trained`` as a new artifact in ``models_dir`` and return it."""
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=models_dir))
    try:
        trained.save_weights(staging / WEIGHTS)
        files = {WEIGHTS: sha256_file(staging / WEIGHTS)}
        if trained.svm is not None:
            (staging / SVM).write_bytes(pickle.dumps(trained.svm, protocol=5))
            files[SVM] = sha256_file(staging / SVM)
        manifest = build_manifest(trained, task=task, channel_recipe=channel_recipe, windowing=windowing,
                                  files=files, created_at=created_at)
        return publish(staging, manifest, models_dir)
    finally:
        if staging.exists():
            staging.chmod(0o700)
            for child in staging.iterdir():
                child.chmod(0o600)
            shutil.rmtree(staging)


def open_artifact(path: Path, *, verify: bool = True) -> Artifact:
    """Read an artifact folder; with ``verify`` (the default) check every file and the folder name."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path} is not a model artifact (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {manifest_path}: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: unknown artifact format {manifest.get('format')!r}")
    if verify:
        for name, digest in manifest["files"].items():
            if not (path / name).is_file() or sha256_file(path / name) != digest:
                raise ArtifactError(f"{path}: {name} does not match the sha256 in its manifest")
        if content_hash(manifest) != path.name:
            raise ArtifactError(f"{path}: the folder name is not the sha256 of its manifest "
                                "(the artifact was modified or renamed)")
    return Artifact(path, manifest)


def list_artifacts(models_dir: Path) -> list[Artifact]:
    """Every artifact in ``models_dir`` (unverified: listing must stay fast), newest first."""
    if not models_dir.is_dir():
        return []
    found = []
    for child in models_dir.iterdir():
        if len(child.name) == HASH_LENGTH and (child / MANIFEST).is_file():
            try:
                found.append(open_artifact(child, verify=False))
            except ArtifactError:
                continue
    return sorted(found, key=lambda a: (a.manifest.get("created_at", ""), a.hash), reverse=True)


def resolve_artifact(reference: str | Path, models_dir: Path, *, verify: bool = True) -> Artifact:
    """A MODEL argument: an artifact folder, or a unique prefix of a hash in ``models_dir``."""
    as_path = Path(reference).expanduser()
    if (as_path / MANIFEST).is_file():
        return open_artifact(as_path, verify=verify)
    prefix = str(reference).lower()
    if not prefix or any(c not in "0123456789abcdef" for c in prefix):
        raise ArtifactError(f"{reference!r} is neither an artifact folder nor a model hash prefix")
    matches = [c for c in (models_dir.iterdir() if models_dir.is_dir() else [])
               if c.name.startswith(prefix) and len(c.name) == HASH_LENGTH]
    if not matches:
        raise ArtifactError(f"no model {prefix} in {models_dir}")
    if len(matches) > 1:
        names = ", ".join(sorted(m.name[:12] for m in matches))
        raise ArtifactError(f"model prefix {prefix} is ambiguous in {models_dir}: {names}")
    return open_artifact(matches[0], verify=verify)
