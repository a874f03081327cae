"""What every benchmark result records beside its figures: commit, date, machine; and where it goes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def header(benchmark: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "commit": commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine()}


def write_result(stem: str, record: dict[str, Any]) -> Path:
    """``bench/results/<stem>.json``; returns its path relative to the repository."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out.relative_to(ROOT)
