"""Patient data stays private to the service account: folders 0700, files 0600.

Every ``triphase`` command sets the umask to 0077 before it writes anything, so new folders, spool
files, results, the SQLite database and its ``-wal``/``-shm`` files are the owner's only. Folders
and database files that already exist with wider modes (made by an older version, or by hand) are
tightened at start-up, with a warning that names them.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_new_files() -> None:
    """New files and folders of this process are the owner's only."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) 0700, or tighten it if it is open to others."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Tighten an existing file to 0600 if it is open to others; nothing if it does not exist."""
    if path.exists():
        _tighten(path, FILE_MODE)


def _tighten(path: Path, mode: int) -> None:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & PRIVATE_UMASK:
        log.warning("%s was readable by others (mode %04o): tightened to %04o", path, current, mode)
        path.chmod(mode)
