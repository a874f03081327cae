"""Deterministic identities of output objects, and the installation's device UID.

A retried or repeated analysis of the same study with the same model must replace its earlier
output in the PACS, not add a second one: SOP Instance and Series UIDs are derived from (study,
model version, lesion, object kind). The Device UID that names this installation as the
observer in every SR is made once and kept in the data directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydicom.uid import generate_uid

DEVICE_UID_FILE = "device_uid"


def sr_uid(study_uid: str, model_hash: str) -> str:
    return generate_uid(entropy_srcs=[study_uid, model_hash, "SR"])


def sr_series_uid(study_uid: str, model_hash: str) -> str:
    return generate_uid(entropy_srcs=[study_uid, model_hash, "SR-series"])


def sc_uid(study_uid: str, model_hash: str, lesion_id: str) -> str:
    return generate_uid(entropy_srcs=[study_uid, model_hash, lesion_id, "SC"])


def sc_series_uid(study_uid: str, model_hash: str) -> str:
    return generate_uid(entropy_srcs=[study_uid, model_hash, "SC-series"])


def tracking_uid(study_uid: str, model_hash: str, lesion_id: str) -> str:
    return generate_uid(entropy_srcs=[study_uid, model_hash, lesion_id, "tracking"])


def device_uid(data_dir: Path) -> str:
    """This installation's Device UID: created on first use, then always the same.

    Several worker processes may ask for it at once on a fresh installation: each writes its
    candidate to a file of its own and hard-links it into place, which succeeds for exactly one,
    so they all read back the same UID.
    """
    path = data_dir / DEVICE_UID_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{DEVICE_UID_FILE}-", dir=data_dir)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_uid() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: its UID stands
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path.read_text(encoding="ascii").strip()
