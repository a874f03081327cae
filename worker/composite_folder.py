"""A folder of prepared composites: ``composites.csv`` (patient_id, study_uid, lesion_id, label, path)
beside RGB PNGs or HxWx3 ``.npy`` arrays, and optionally ``composites.json`` saying how they were made
(``channel_recipe``, ``windowing``), which the model's manifest then quotes.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image

from models.compositing import DEFAULT_RECIPES, ChannelRecipe
from worker.grouping import load_rules
from worker.study_composites import Displacement, build_composites

REQUIRED_COLUMNS = ("patient_id", "study_uid", "lesion_id", "label", "path")
log = logging.getLogger(__name__)


class Provenance(TypedDict, total=False):
    """How the composites were made: ``composites.json`` beside them, or what the inference path did."""

    channel_recipe: list[str]
    windowing: dict[str, object]
    skipped: dict[str, str]  # study (or study/lesion) -> why it was left out


@dataclass
class CompositeFolder:
    root: Path
    images: list[np.ndarray]
    labels: list[str]
    patient_ids: list[str]
    rows: list[dict[str, str]]
    provenance: Provenance = field(default_factory=lambda: Provenance())


def read_image(path: Path) -> np.ndarray:
    """An HxWx3 composite from a PNG (uint8) or ``.npy`` (uint8, or float in [0, 1])."""
    if path.suffix.lower() == ".npy":
        array: np.ndarray = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{path}: a composite is HxWx3, got shape {array.shape}")
    return array


def load_composite_folder(root: Path) -> CompositeFolder:
    table = root / "composites.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{root} has no composites.csv (columns: {', '.join(REQUIRED_COLUMNS)})")
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{table}: missing columns {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{table} lists no composites")
    images = []
    for number, row in enumerate(rows, start=2):
        path = (root / row["path"]).resolve()
        if root.resolve() not in path.parents:
            raise ValueError(f"{table} line {number}: path {row['path']!r} leaves the folder")
        images.append(read_image(path))
    provenance = Provenance()
    sidecar = root / "composites.json"
    if sidecar.is_file():
        provenance = json.loads(sidecar.read_text(encoding="utf-8"))
    return CompositeFolder(root, images, [r["label"].strip() for r in rows],
                           [r["patient_id"].strip() for r in rows], rows, provenance)


def load_study_folder(root: Path, *, size: int, rules_path: Path | None = None,
                      channel_recipe: list[str] | None = None, register: bool = True,
                      displace: Displacement | None = None) -> CompositeFolder:
    """Composites built from a folder of DICOM studies plus ``labels.csv``, by the inference path.

    Lesions are matched to their labels by (study UID, lesion id); studies that cannot be
    composited are reported and left out, never silently.
    """
    table = root / "labels.csv"
    with table.open(newline="", encoding="utf-8") as handle:
        truth = {(r["study_uid"].strip(), r["lesion_id"].strip()): r for r in csv.DictReader(handle)}
    if not truth:
        raise ValueError(f"{table} lists no lesions")
    rules = load_rules(rules_path)
    recipe = None
    if channel_recipe:
        red, green, blue = channel_recipe
        recipe = ChannelRecipe(channels=(red, green, blue))
    results = build_composites([root], rules, size=size, recipe=recipe, register=register, displace=displace)
    images, labels, patients, rows = [], [], [], []
    skipped: dict[str, str] = {}
    used_recipe = None
    for uid, study in results.items():
        if study.skipped:
            skipped[uid] = study.skipped
            continue
        used_recipe = study.recipe
        for item in study.composites:
            row = truth.get((uid, item.lesion.lesion_id))
            if row is None:
                skipped[f"{uid}/{item.lesion.lesion_id}"] = "lesion not in labels.csv"
                continue
            images.append(item.composite.rgb)
            labels.append(row["label"].strip())
            patients.append(row["patient_id"].strip())
            rows.append({k: row[k] for k in ("patient_id", "study_uid", "lesion_id", "label")}
                        | {"roi_source": item.lesion.source.value})
    for key, reason in skipped.items():
        log.warning("left out of training: %s: %s", key, reason)
    if not images:
        raise ValueError(f"no composites could be built from {root} ({len(skipped)} studies skipped)")
    recipe_used = used_recipe or DEFAULT_RECIPES["ct-histology"]
    provenance = Provenance(channel_recipe=list(recipe_used.channels),
                            windowing={"source": "built from DICOM studies by the inference path",
                                       "recipe": recipe_used.as_json(), "rules": rules.source},
                            skipped=skipped)
    return CompositeFolder(root, images, labels, patients, rows, provenance)
