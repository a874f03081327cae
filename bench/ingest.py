"""Ingest throughput: the same 300 CT instances (512 x 512 int16) over one association.

dcmtk ``storescu`` (TCP_NODELAY=1) sends to ``triphase node`` (durable writes and audit rows on),
to dcmtk ``storescp`` and to Orthanc, each started here on loopback; prints instances/s, MB/s and
the ratios, and writes the figures to ``bench/results/``. Run from the repository root:

    python bench/ingest.py [--instances 300] [--repeat 3] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402

from bench.provenance import header, write_result  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.factories import ct_dataset  # noqa: E402
from tests.processes import NodeProcess, Orthanc, wait_for_port  # noqa: E402

ENV = dict(os.environ, TCP_NODELAY="1")


def make_instances(folder: Path, count: int) -> list[Path]:
    existing = sorted(folder.glob("*.dcm"))
    if len(existing) == count:
        return existing
    folder.mkdir(parents=True, exist_ok=True)
    for old in existing:
        old.unlink()
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        path = folder / f"{i:04d}.dcm"
        ct_dataset(study, series, index=i, size=512).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def storescu(port: int, called: str, files: list[Path]) -> float:
    started = time.perf_counter()
    run = subprocess.run(["storescu", "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                         env=ENV, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {run.stderr[-2000:]}")
    return elapsed


def bench_triphase(files: list[Path], work: Path, repeat: int, db_url: str) -> list[float]:
    times = []
    for i in range(repeat):
        node = NodeProcess(work / f"triphase{i}", peers=[{"name": "bench", "ae_title": "BENCH"}], db_url=db_url)
        node.extra_node = {"quiet_period_s": 3600}
        node.start()
        try:
            times.append(storescu(node.port, "TRIPHASE", files))
            count = json.loads(node.cli("studies", "--json").stdout)[0]["instances"]
            if count != len(files):
                raise RuntimeError(f"triphase recorded {count} of {len(files)} instances")
        finally:
            node.terminate()
    return times


def bench_storescp(files: list[Path], work: Path, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        out = work / f"storescp{i}"
        out.mkdir(parents=True)
        port = free_port()
        proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(out), str(port)], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, proc=proc)
            times.append(storescu(port, "STORESCP", files))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return times


def bench_orthanc(files: list[Path], work: Path, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        orthanc = Orthanc(work / f"orthanc{i}", modalities={"bench": ["BENCH", "127.0.0.1", 104]})
        orthanc.start()
        try:
            times.append(storescu(orthanc.dicom_port, orthanc.aet, files))
        finally:
            orthanc.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db-url", default="", help="audit database for triphase (default: embedded SQLite)")
    args = parser.parse_args()

    data = make_instances(ROOT / "bench" / "work" / "ingest-ct512", args.instances)
    megabytes = sum(p.stat().st_size for p in data) / 1e6
    with tempfile.TemporaryDirectory(prefix="triphase-bench-") as tmp:
        work = Path(tmp)
        results = {
            "triphase": bench_triphase(data, work, args.repeat, args.db_url),
            "storescp": bench_storescp(data, work, args.repeat),
            "orthanc": bench_orthanc(data, work, args.repeat),
        }
    figures = {}
    for name, times in results.items():
        median = statistics.median(times)
        figures[name] = {"seconds": round(median, 3), "instances_per_s": round(len(data) / median, 1),
                         "mb_per_s": round(megabytes / median, 1), "runs": [round(t, 3) for t in times]}
    tri = figures["triphase"]["instances_per_s"]
    ratios = {f"triphase_vs_{n}": round(tri / figures[n]["instances_per_s"], 2) for n in ("orthanc", "storescp")}
    report = header("ingest") | {
        "instances": len(data), "megabytes": round(megabytes, 1),
        "database": "postgresql" if args.db_url.startswith("postgresql") else "sqlite",
        "figures": figures, "ratios": ratios,
    }
    for name, fig in figures.items():
        print(f"{name:9s} {fig['instances_per_s']:7.1f} instances/s {fig['mb_per_s']:7.1f} MB/s  "
              f"(median of {args.repeat})")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = write_result(f"ingest-{stamp}-{report['database']}", report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
