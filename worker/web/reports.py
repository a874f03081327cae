"""The evaluation reports under ``<data_dir>/reports/``, listed and served read-only.

A requested path is resolved (symbolic links included) and must still lie inside the reports
folder, and must name one of the files ``triphase evaluate`` writes; anything else is "not found",
so no request can read another file of the installation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

MEDIA_TYPES = {".html": "text/html; charset=utf-8"}


@dataclass(frozen=True)
class ReportFile:
    relative: str
    modified: dt.datetime
    size: int


def list_reports(reports_dir: Path, *, limit: int = 200) -> list[ReportFile]:
    """Every report file under ``reports_dir``, newest first."""
    if not reports_dir.is_dir():
        return []
    root = reports_dir.resolve()
    found = []
    for path in root.rglob("*"):
        if path.suffix in MEDIA_TYPES and safe_report_path(root, path.relative_to(root).as_posix()) is not None:
            stat = path.stat()
            found.append(ReportFile(path.relative_to(root).as_posix(),
                                    dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC), stat.st_size))
    return sorted(found, key=lambda r: (r.modified, r.relative), reverse=True)[:limit]


def safe_report_path(reports_dir: Path, relative: str) -> Path | None:
    """The file ``relative`` names inside ``reports_dir``, or None if it is outside, hidden or not a report."""
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        return None
    root = reports_dir.resolve()
    try:
        candidate = (root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(root) or not candidate.is_file() or candidate.suffix not in MEDIA_TYPES:
        return None
    if any(part.startswith(".") for part in candidate.relative_to(root).parts):
        return None
    return candidate
