"""CPU seconds per study of the worker's analysis, in process: no broker, no database, no network.

The arrival benchmark's throughput needs a quiet machine; CPU time per study does not, so this is
how a change to the analysis path is judged on a shared one. One 4-phase synthetic CT study (the
arrival benchmark's: 4 x 40 slices at 256 x 256 with a SEG) and the arrival benchmark's small model
are made once and cached under ``bench/work/``. Each run then does what the analyse task does
with them (header scan, grouping, annotation check, :func:`worker.analysis.analyse_study`, SR and
SC written to disk) and is timed with ``time.process_time`` (every thread of the process). One more
run under cProfile gives the functions that dominate. From the repository root:

    python bench/analysis_profile.py [--runs 5] [--slices 40] [--matrix 256] [--top 30] [--no-write]

``2 * 3600 / cpu_s_per_study`` is an upper bound on studies per hour with two worker processes on
two cores (the node's receiving, the database and the sends cost CPU too).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.provenance import header, write_result  # noqa: E402
from models.architectures import default_registry  # noqa: E402
from models.artifact import Artifact, open_artifact  # noqa: E402
from models.inference import Classifier  # noqa: E402
from worker.devices import cpu_threads_for_process  # noqa: E402
from worker.grouping import Rules, load_rules  # noqa: E402
from worker.grouping.matching import group_study  # noqa: E402
from worker.grouping.series_info import scan_studies  # noqa: E402
from worker.jobs import _write_results  # noqa: E402
from worker.results.algorithm import algorithm_for  # noqa: E402
from worker.roi import annotation_files  # noqa: E402

WORK = ROOT / "bench" / "work" / "analysis-profile"
SEED = 9  # the arrival benchmark's studies


def cached_model() -> Artifact:
    """The arrival benchmark's model (tinycnn, SVM head), trained once into ``bench/work``."""
    folder = WORK / "model"
    done = folder / "artifact.txt"
    if not done.exists():
        from bench.arrival import train

        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        artifact = train(folder)
        done.write_text(str(artifact.path))  # type: ignore[attr-defined]
    return open_artifact(Path(done.read_text()))


def cached_study(slices: int, matrix: int) -> Path:
    """The first study of the arrival benchmark's run at this size, generated once."""
    from worker.synth.context import StudyOptions
    from worker.synth.study import generate_study

    folder = WORK / f"study-{slices}x{matrix}"
    done = folder / "done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        generate_study(folder, StudyOptions(task="ct-histology", seed=SEED, difficulty=0.2, slices=slices,
                                            matrix=matrix, extras=False), 0)
        done.write_text("")
    [study] = sorted(folder.glob("study-*"))
    return study


def analyse_once(study: Path, rules: Rules, artifact: Artifact, classifier: Classifier, out: Path) -> dict[str, Any]:
    """What ``run_analyse`` does with a study's files, without the database: returns a summary."""
    from worker.analysis import analyse_study

    files = sorted(study.glob("*.dcm"))
    [(uid, series)] = scan_studies(files).series.items()
    grouping = group_study(uid, series, rules)
    if grouping.task is None or not any(annotation_files(series).values()):
        raise RuntimeError("the benchmark study should be a CT study with a SEG")
    result = analyse_study(uid, series, rules, classifier=classifier, algorithm=algorithm_for(artifact),
                           device_uid="2.25.1", grouping=grouping)
    if result.sr is None:
        raise RuntimeError(f"not analysed: {result.reason}")
    _write_results(out, result)
    return {"lesions": [lesion.as_json() for lesion in result.lesions], "files": len(files)}


def top_functions(profile: cProfile.Profile, count: int) -> tuple[str, list[dict[str, object]]]:
    """The printed table and its rows, by cumulative time."""
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text).sort_stats("cumulative")
    stats.print_stats(count)
    rows = []
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename.replace(str(ROOT) + "/", "")
        rows.append({"function": f"{where}:{line}({name})", "calls": calls, "own_s": round(own, 4),
                     "cumulative_s": round(cumulative, 4)})
    rows.sort(key=lambda r: -float(r["cumulative_s"]))  # type: ignore[arg-type]
    return text.getvalue(), rows[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--top", type=int, default=30, help="functions listed by cumulative time")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes sharing the cores: torch gets its share of threads, as in the worker")
    parser.add_argument("--label", default="", help="a word for the result's file name (before, after)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    artifact, study = cached_model(), cached_study(args.slices, args.matrix)
    rules = load_rules()
    threads = cpu_threads_for_process(args.processes, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    classifier = Classifier(artifact, registry=default_registry(), device="cpu")  # once per worker process
    with tempfile.TemporaryDirectory(prefix="triphase-profile-") as tmp:
        out = Path(tmp) / "results"
        summary = analyse_once(study, rules, artifact, classifier, out)  # warm: lazy imports, first calls
        cpu, wall = [], []
        for _ in range(args.runs):
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            analyse_once(study, rules, artifact, classifier, out)
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
        profile = cProfile.Profile()
        profile.runcall(analyse_once, study, rules, artifact, classifier, out)
    table, rows = top_functions(profile, args.top)
    print(table)
    per_study = statistics.median(cpu)
    record = header("analysis-profile") | {
        "study": f"4-phase CT, 4 x {args.slices} slices at {args.matrix}x{args.matrix}, SEG (synth seed {SEED})",
        "model": {"architecture": artifact.manifest["architecture"], "mode": artifact.manifest["mode"]},
        "processes": args.processes, "torch_threads": threads,
        "runs": args.runs, "cpu_s_per_study_median": round(per_study, 3),
        "cpu_s_per_study": [round(v, 3) for v in cpu], "wall_s_per_study": [round(v, 3) for v in wall],
        "studies_per_hour_2_cores_upper_bound": round(2 * 3600 / per_study, 1),
        "result": summary, "top_cumulative": rows}
    print(json.dumps({k: v for k, v in record.items() if k not in ("top_cumulative", "result")}, indent=2))
    if not args.no_write:
        stem = "-".join(p for p in ("analysis-profile", args.label, time.strftime("%Y%m%d-%H%M%S")) if p)
        print(f"written to {write_result(stem, record)}")


if __name__ == "__main__":
    main()
