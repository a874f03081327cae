"""Offline ImageNet weights: where they live, checking them, importing them.

Hospitals' GPU hosts have no internet, so nothing here downloads. Weights are looked up with
torchvision's own file names (``vgg16-397923af.pth``) in a configured folder or in torch.hub's cache
(``$TORCH_HOME/hub/checkpoints``), which lets a site copy a cache it already has. The hex digits in
the file name are the prefix of the file's sha256 that torchvision publishes; a file whose content
does not match is refused, because a truncated copy or a mixed-up file would otherwise train
silently from the wrong starting point.

This module never imports torch (listing and importing weights must stay cheap);
:func:`models.architectures.load_pretrained` loads a verified file into a network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from models.registry import HASH_PREFIX_RE, ArchitectureSpec, Registry

log = logging.getLogger(__name__)

RANDOM_INIT = "random-init"


class WeightsNotFoundError(FileNotFoundError):
    """The expected checkpoint file is not in the weights folder."""


class WeightsHashMismatchError(ValueError):
    """A checkpoint's sha256 does not start with the prefix its name promises."""


class WeightsOriginJson(TypedDict):
    """The manifest's ``weights_origin`` section."""

    kind: str
    file_name: str | None
    sha256: str | None


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a model's starting weights came from; quoted in the manifest."""

    kind: str  # "imagenet" or "random-init"
    file_name: str | None
    sha256: str | None

    def to_dict(self) -> WeightsOriginJson:
        return {"kind": self.kind, "file_name": self.file_name, "sha256": self.sha256}


def default_weights_dir(environ: Mapping[str, str] | None = None) -> Path:
    """torch.hub's checkpoint folder, computed the way torch.hub does, without importing torch."""
    env = os.environ if environ is None else environ
    torch_home = env.get("TORCH_HOME") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def resolve_weights_dir(configured: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    return Path(configured).expanduser() if configured else default_weights_dir(environ)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def expected_prefix(file_name: str) -> str:
    match = HASH_PREFIX_RE.search(file_name)
    if match is None:
        raise ValueError(f"{file_name!r} carries no '-<sha256 prefix>.' in its name")
    return match.group(1)


def verify_weights_file(path: Path, file_name: str | None = None) -> str:
    """The file's sha256, after checking it starts with the prefix in ``file_name`` (default: its own)."""
    prefix = expected_prefix(file_name or path.name)
    digest = sha256_file(path)
    if not digest.startswith(prefix):
        raise WeightsHashMismatchError(
            f"{path}: sha256 {digest[:16]}... does not start with {prefix} as {file_name or path.name} "
            "requires; the file is corrupt or belongs to another network")
    return digest


def locate_weights(spec: ArchitectureSpec, weights_dir: Path) -> Path:
    if spec.weights is None:
        raise WeightsNotFoundError(
            f"architecture {spec.name} has no pretrained weights entry; train it with --random-init")
    path = weights_dir / spec.weights.file_name
    if not path.is_file():
        raise WeightsNotFoundError(
            f"pretrained weights for {spec.name} not found: put {spec.weights.file_name} in {weights_dir} "
            f"(or run 'triphase weights import FILE'); nothing is downloaded. "
            "Use --random-init to train from random initialisation instead")
    return path


@dataclass(frozen=True)
class WeightsStatus:
    architecture: str
    file_name: str | None
    path: Path | None
    present: bool
    size_bytes: int | None
    verified: bool | None  # None: not checked


def list_weights(registry: Registry, weights_dir: Path, *, verify: bool = False) -> list[WeightsStatus]:
    out = []
    for spec in registry:
        if spec.weights is None:
            out.append(WeightsStatus(spec.name, None, None, False, None, None))
            continue
        path = weights_dir / spec.weights.file_name
        present = path.is_file()
        verified: bool | None = None
        if present and verify:
            try:
                verify_weights_file(path, spec.weights.file_name)
                verified = True
            except WeightsHashMismatchError:
                verified = False
        out.append(WeightsStatus(spec.name, spec.weights.file_name, path, present,
                                 path.stat().st_size if present else None, verified))
    return out


def import_weights(source: Path, registry: Registry, weights_dir: Path,
                   *, architecture: str | None = None) -> tuple[ArchitectureSpec, Path]:
    """Copy ``source`` into ``weights_dir`` under its architecture's torchvision file name.

    The architecture is the one named, else the one whose expected hash prefix the file's sha256
    starts with (so a renamed download is recognised). The copy is atomic; an existing identical
    file is left alone.
    """
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {source}")
    digest = sha256_file(source)
    candidates = [s for s in registry if s.weights is not None and
                  (architecture is None or s.name == architecture)]
    if architecture is not None and not candidates:
        registry.get(architecture)  # raises LookupError for an unknown name
        raise ValueError(f"architecture {architecture} has no pretrained weights entry")
    matching = [s for s in candidates if s.weights is not None and digest.startswith(s.weights.sha256_prefix)]
    if not matching:
        if architecture is not None:
            assert candidates[0].weights is not None
            raise WeightsHashMismatchError(
                f"{source}: sha256 {digest[:16]}... is not {candidates[0].weights.file_name} "
                f"(expected prefix {candidates[0].weights.sha256_prefix})")
        raise WeightsHashMismatchError(
            f"{source}: sha256 {digest[:16]}... matches no registered architecture's weights file")
    spec = matching[0]
    assert spec.weights is not None
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / spec.weights.file_name
    if target.is_file() and sha256_file(target) == digest:
        return spec, target
    with tempfile.NamedTemporaryFile(dir=weights_dir, prefix=".import-", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        shutil.copyfile(source, tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    log.info("imported %s as %s", source, target)
    return spec, target
