"""Benchmark of ``triphase synth``: seconds per 4-phase CT study (4 x 40 slices at 256 x 256).

Run from the repository root: ``python bench/synth.py [--studies N]``. Prints the figures and
writes them, with commit, date and machine description, to ``bench/results/synth-<date>.json``.
The target is under 2 s per study (extras and SEG included) on a 2-core machine.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.provenance import header, write_result  # noqa: E402
from worker.synth.context import StudyOptions  # noqa: E402
from worker.synth.study import generate_study  # noqa: E402


def measure(studies: int, extras: bool, style: str) -> dict[str, float]:
    times = []
    files = 0
    with tempfile.TemporaryDirectory() as tmp:
        options = StudyOptions(task="ct-histology", seed=1, difficulty=0.5, slices=40, matrix=256, extras=extras,
                               style=style)
        generate_study(Path(tmp) / "warm", options, 999)  # imports and caches outside the timing
        for index in range(studies):
            start = time.perf_counter()
            record = generate_study(Path(tmp), options, index)
            times.append(time.perf_counter() - start)
            files += record.files
    return {"studies": studies, "files": files, "mean_s": round(sum(times) / len(times), 3),
            "max_s": round(max(times), 3), "studies_per_s": round(studies / sum(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    results = {
        "ct_4x40_256_with_extras_and_seg": measure(args.studies, True, "mixed"),
        "ct_4x40_256_phases_and_seg_only": measure(args.studies, False, "ge"),
    }
    for name, figures in results.items():
        print(f"{name}: {figures['mean_s']:.3f} s per study (max {figures['max_s']:.3f}), "
              f"{figures['studies_per_s']:.2f} studies/s, {figures['files']} files")
    record = header("synth") | {"target_s": 2.0, "results": results}
    if not args.no_write:
        print(f"written {write_result(f'synth-{datetime.date.today().isoformat()}', record)}")


if __name__ == "__main__":
    main()
