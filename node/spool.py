"""Durable storage of received instances: ``spool/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``.

The order is what makes a success response trustworthy, and it is fixed here:
write to a temp file, fsync it, rename it into place, fsync the directory. Only then may the
caller record the instance and answer success. A crash at any point leaves either nothing, a
``.part`` file in ``.tmp/`` (removed at the next start), or a complete file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from db.private import private_dir
from db.settings import GeneralSettings
from node.settings import NodeSettings

TMP_DIR_NAME = ".tmp"
SUFFIX = ".dcm"
_COPY_BYTES = 1024 * 1024


class Received(Protocol):
    """A complete file in ``.tmp`` with its size and hash (:class:`node.intake.ReceivedFile`)."""

    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    def sync(self) -> None: ...


class LowDiskSpace(OSError):
    """Free space is below the configured watermark; nothing was written."""


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    size_bytes: int
    sha256: str
    replaced: bool  # a file of that SOP instance was already there


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The spool directory of one node. UIDs must be checked (:mod:`node.uids`) before use."""

    def __init__(self, root: Path, *, min_free_bytes: int = 0) -> None:
        self.root = root
        self._root = os.fspath(root)
        self.tmp_dir = root / TMP_DIR_NAME
        self.min_free_bytes = min_free_bytes
        private_dir(root)
        private_dir(self.tmp_dir)
        _fsync_dir(root)

    @classmethod
    def from_settings(cls, node: NodeSettings, general: GeneralSettings) -> Spool:
        """The configured spool: ``node.spool_dir`` (default ``<data_dir>/spool``), refusing
        writes below ``node.min_free_disk_mb``."""
        return cls(node.spool_dir or general.spool_dir, min_free_bytes=node.min_free_disk_mb * 1024 * 1024)

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> str:
        return f"{study_uid}/{series_uid}/{sop_uid}{SUFFIX}"

    def absolute(self, relative_path: str) -> Path:
        return self.root / relative_path

    def free_bytes(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def check_space(self, incoming_bytes: int) -> None:
        if self.free_bytes() - incoming_bytes < self.min_free_bytes:
            raise LowDiskSpace(errno.ENOSPC, "free space below the configured watermark")

    def store(self, study_uid: str, series_uid: str, sop_uid: str, chunks: Sequence[bytes]) -> StoredFile:
        """Write ``chunks`` durably at the instance's path; raises OSError with nothing left behind.

        Chunks (file meta, then the data set as received) are written one after the other, so the
        large data set is never copied into one concatenated buffer.
        """
        size = sum(len(chunk) for chunk in chunks)
        self.check_space(size)
        relative = self.relative_path(study_uid, series_uid, sop_uid)
        final = self.root / relative
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        for chunk in chunks:
            hasher.update(chunk)
        try:
            self._write_synced(tmp, chunks)
            series_dir = final.parent
            self._ensure_dir(series_dir)
            replaced = final.exists()
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(series_dir)
        return StoredFile(relative, size, hasher.hexdigest(), replaced)

    def adopt(self, study_uid: str, series_uid: str, sop_uid: str, received: Received) -> StoredFile:
        """Move a file received into ``.tmp`` into place durably: fsync it, rename, fsync the folder.

        The file was written on the spool's file system (:mod:`node.intake`), so it is renamed,
        never copied. The watermark is checked as for :meth:`store`, the file being already there.
        Paths are plain strings here: this runs for every received instance.
        """
        self.check_space(0)
        relative = self.relative_path(study_uid, series_uid, sop_uid)
        final = f"{self._root}/{relative}"
        series_dir = os.path.dirname(final)
        received.sync()
        self._ensure_dir(series_dir)
        replaced = os.path.exists(final)
        try:
            os.replace(received.name, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # received elsewhere: a copy, then the same durable rename
            self._copy_in(Path(received.name), Path(final))
        _fsync_dir(series_dir)
        return StoredFile(relative, received.size, received.sha256, replaced)

    def _copy_in(self, source: Path, final: Path) -> None:
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        try:
            with source.open("rb") as handle:
                self._write_synced(tmp, iter(lambda: handle.read(_COPY_BYTES), b""))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, relative_path: str) -> None:
        """Undo a store whose record failed, so no unrecorded file looks valid."""
        path = self.root / relative_path
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    @staticmethod
    def _write_synced(path: Path, chunks: Iterable[bytes]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ensure_dir(self, directory: str | Path) -> None:
        """Create the study/series folders, fsyncing each parent that gained an entry."""
        if os.path.isdir(directory):
            return
        missing: list[Path] = []
        current = Path(directory)
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:  # another association created it meanwhile
                continue
            _fsync_dir(path.parent)

    def leftover_temp_files(self) -> list[Path]:
        return sorted(self.tmp_dir.glob("*.part"))

    def instance_files(self) -> list[str]:
        """Every stored instance, as spool-relative paths (used by start-up reconciliation)."""
        found: list[str] = []
        for study in os.scandir(self.root):
            # Study folders are named by UID (digits and dots); skip .tmp, quarantine and the like.
            if not study.name[:1].isdigit() or not study.is_dir():
                continue
            for series in os.scandir(study.path):
                if not series.is_dir():
                    continue
                for entry in os.scandir(series.path):
                    if entry.name.endswith(SUFFIX) and entry.is_file():
                        found.append(f"{study.name}/{series.name}/{entry.name}")
        return found
