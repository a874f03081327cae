"""Ingest throughput: the same CT instances (512 x 512 int16) over one or several associations.

dcmtk ``storescu`` (by absolute path, TCP_NODELAY=1) sends to ``triphase node`` (durable writes and
audit rows on), to dcmtk ``storescp`` and to Orthanc, each started here on loopback, in one run; with
``--associations N`` the instances are split into N parts sent at once over N associations (one
``storescu`` each). Prints instances/s, MB/s and the ratios, and writes the figures to
``bench/results/``, with the CPU each receiver used per instance (all its processes, user and
system) and how busy the machine was during the send: where the machine is nearly busy, the CPU
per instance is what decides the ratio. Run from the repository root:

    python bench/ingest.py [--instances 300] [--repeat 3] [--associations 4] [--receivers 2]
                           [--db-url postgresql+psycopg://127.0.0.1/test] [--baseline COMMIT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom.uid import generate_uid  # noqa: E402
from scipy.stats import binom  # noqa: E402

from bench.provenance import header, write_result  # noqa: E402
from tests.conftest import free_port, new_postgres_database  # noqa: E402
from tests.factories import ct_dataset  # noqa: E402
from tests.processes import NodeProcess, Orthanc, child_pids, cpu_seconds, wait_for_port  # noqa: E402

# dcmtk's tools by path: a virtual environment puts pynetdicom's own storescu/storescp first on PATH
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
ENV = dict(os.environ, TCP_NODELAY="1")


def make_instances(folder: Path, count: int, matrix: int = 512) -> list[Path]:
    """``count`` CT slices of ``matrix`` x ``matrix`` int16 in one series, made once and kept."""
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
        ct_dataset(study, series, index=i, size=matrix).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def instances_folder(matrix: int) -> Path:
    return ROOT / "bench" / "work" / f"ingest-ct{matrix}"


def work_folder() -> Path:
    """Where the receivers under test keep their files: ``bench/work``, like a node's own data
    folder, not ``/tmp``. On a journal-less ext4 (this project's benchmark VM) a folder whose
    block group has seen thousands of files deleted in the last 30 s (test suites clean up under
    /tmp) makes every new file cost 0.5 to 1.2 ms of inode search, for every receiver measured."""
    folder = ROOT / "bench" / "work" / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def storescu(port: int, called: str, files: list[Path]) -> None:
    run = subprocess.run([STORESCU, "-aet", "BENCH", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                         env=ENV, capture_output=True, text=True, timeout=900)
    if run.returncode != 0:
        raise RuntimeError(f"storescu to {called} failed: {run.stderr[-2000:]}")


@dataclass(frozen=True)
class Run:
    """One receiver's send: its seconds, the CPU its processes used meanwhile, and the machine's."""

    seconds: float
    user_s: float
    system_s: float
    machine_busy: float  # share of the machine's CPU time in use during the send (every process)


def receiver_cpu(root: int) -> tuple[float, float]:
    """User and system seconds of a receiver: its process, its live children (triphase's
    receivers, storescp's forks) and the children it has reaped."""
    user = system = 0.0
    for pid in [root, *child_pids(root)]:
        pid_user, pid_system = cpu_seconds(pid)
        user, system = user + pid_user, system + pid_system
    return user, system


def machine_ticks() -> tuple[int, int]:
    """All and idle (idle + iowait) CPU ticks of the machine so far, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def measured_send(root: int, port: int, called: str, files: list[Path], associations: int) -> Run:
    """:func:`send`, with the receiver's CPU (its process tree under ``root``) and the machine's."""
    user, system = receiver_cpu(root)
    total, idle = machine_ticks()
    seconds = send(port, called, files, associations)
    user_after, system_after = receiver_cpu(root)
    total_after, idle_after = machine_ticks()
    busy = 1 - (idle_after - idle) / max(total_after - total, 1)
    return Run(seconds, user_after - user, system_after - system, busy)


def send(port: int, called: str, files: list[Path], associations: int) -> float:
    """Seconds to send every file over ``associations`` concurrent associations (one storescu each)."""
    parts = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=associations) as pool:
        for done in [pool.submit(storescu, port, called, part) for part in parts if part]:
            done.result()
    return time.perf_counter() - started


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """The embedded SQLite database (empty ``server_url``), or a new PostgreSQL database on that
    server for one run, dropped afterwards: every run receives the study for the first time."""
    if not server_url:
        yield ""
        return
    with new_postgres_database(server_url, prefix="triphase_bench") as url:
        yield url


@dataclass
class TreeNode(NodeProcess):
    """``triphase node`` from another checkout of the code (an earlier commit, for comparison)."""

    tree: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)  # before the editable install's own folder
        return env


@contextlib.contextmanager
def checkout(commit: str) -> Iterator[Path]:
    """A temporary worktree of ``commit``, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="triphase-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


def run_triphase(files: list[Path], work: Path, server_url: str, associations: int, receivers: int,
                 tree: Path | None = None) -> Run:
    with fresh_database(server_url) as db_url:
        return _run_triphase(files, work, db_url, associations, receivers, tree)


def _run_triphase(files: list[Path], work: Path, db_url: str, associations: int, receivers: int,
                  tree: Path | None) -> Run:
    node = TreeNode(work, peers=[{"name": "bench", "ae_title": "BENCH"}], db_url=db_url, tree=tree)
    node.extra_node = {"quiet_period_s": 3600, "receivers": receivers}
    node.start()
    try:
        wait_for_receivers(node, receivers)
        assert node.proc is not None
        run = measured_send(node.proc.pid, node.port, "TRIPHASE", files, associations)
        count = json.loads(node.cli("studies", "--json").stdout)[0]["instances"]
        if count != len(files):
            raise RuntimeError(f"triphase recorded {count} of {len(files)} instances")
        return run
    finally:
        node.terminate()


def wait_for_receivers(node: NodeProcess, receivers: int, timeout: float = 60) -> None:
    """Until every further receiving process listens (spawned processes take seconds to start;
    the other receivers measured here are also started before they are sent to)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log()
        if all(f"receiver {i} listening" in log for i in range(1, receivers)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"triphase's receivers did not start: {node.log()[-2000:]}")


def run_storescp(files: list[Path], work: Path, associations: int) -> Run:
    work.mkdir(parents=True)
    port = free_port()
    # --fork: a process per association, so several associations are served at once
    fork = ["--fork"] if associations > 1 else []
    proc = subprocess.Popen([STORESCP, *fork, "-aet", "STORESCP", "-od", str(work), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=proc)
        return measured_send(proc.pid, port, "STORESCP", files, associations)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_orthanc(files: list[Path], work: Path, associations: int) -> Run:
    orthanc = Orthanc(work, modalities={"bench": ["BENCH", "127.0.0.1", 104]})
    orthanc.start()
    try:
        assert orthanc.proc is not None
        return measured_send(orthanc.proc.pid, orthanc.dicom_port, orthanc.aet, files, associations)
    finally:
        orthanc.stop()


def measure(files: list[Path], work: Path, args: argparse.Namespace, baseline: Path | None
            ) -> dict[str, list[Run]]:
    """Each receiver once per round, the rounds one after another: a machine whose load drifts
    during the run weighs on every receiver alike."""
    results: dict[str, list[Run]] = {"triphase": [], "storescp": [], "orthanc": []}
    for i in range(args.repeat):
        results["triphase"].append(run_triphase(files, work / f"triphase{i}", args.db_url, args.associations,
                                                args.receivers))
        if baseline is not None:
            results.setdefault("baseline", []).append(run_triphase(
                files, work / f"baseline{i}", args.db_url, args.associations, args.receivers, baseline))
        results["storescp"].append(run_storescp(files, work / f"storescp{i}", args.associations))
        results["orthanc"].append(run_orthanc(files, work / f"orthanc{i}", args.associations))
    return results


def receiver_figures(runs: list[Run], count: int, megabytes: float) -> dict[str, object]:
    """The medians of one receiver's runs (the seconds' median gives the throughput)."""
    median = statistics.median(run.seconds for run in runs)
    return {
        "seconds": round(median, 3), "instances_per_s": round(count / median, 1),
        "mb_per_s": round(megabytes / median, 1), "runs": [round(run.seconds, 3) for run in runs],
        "cpu_ms_per_instance": {"user": round(statistics.median(run.user_s for run in runs) / count * 1000, 2),
                                "system": round(statistics.median(run.system_s for run in runs) / count * 1000, 2)},
        "machine_busy": round(statistics.median(run.machine_busy for run in runs), 3),
    }


def round_ratios(results: dict[str, list[Run]]) -> dict[str, dict[str, object]]:
    """Triphase's speed over each other receiver's, round by round (the two ran minutes apart on
    the same machine), with the median and a distribution-free confidence interval for it: the
    narrowest pair of order statistics covering the median with at least 95 %, or the widest
    there is (five rounds: the smallest and largest ratio, 93.8 %; nine: the second and eighth,
    96.1 %)."""
    ratios: dict[str, dict[str, object]] = {}
    for name, runs in results.items():
        if name == "triphase":
            continue
        per_round = sorted(other.seconds / own.seconds for own, other in zip(results["triphase"], runs, strict=True))
        n = len(per_round)
        k = 0  # the interval is per_round[k], per_round[n - 1 - k]; its coverage 1 - 2 P(B <= k)
        while k + 1 <= n - 2 - k and binom.cdf(k + 1, n, 0.5) <= 0.025:
            k += 1
        interval = {"low": round(per_round[k], 3), "high": round(per_round[n - 1 - k], 3),
                    "coverage": round(1 - 2 * float(binom.cdf(k, n, 0.5)), 3) if n > 1 else None}
        ratios[f"triphase_vs_{name}"] = {"per_round": [round(r, 3) for r in per_round],
                                         "median": round(statistics.median(per_round), 3),
                                         "interval": interval}
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db-url", default="", help="a PostgreSQL server for triphase's audit database, "
                        "e.g. postgresql+psycopg://127.0.0.1/test (each run gets a new database there; "
                        "default: the embedded SQLite)")
    parser.add_argument("--associations", type=int, default=1, help="concurrent associations (storescu processes)")
    parser.add_argument("--receivers", type=int, default=1, help="triphase's [node] receivers (processes)")
    parser.add_argument("--baseline", default="", help="also run triphase of this commit (e.g. one before a "
                        "change), with the same --receivers, in the same rounds")
    parser.add_argument("--matrix", type=int, default=512, help="rows and columns of each slice (512: CT, "
                        "0.5 MB; 256 or 128: small MR-sized instances, where per-instance costs dominate)")
    args = parser.parse_args()

    data = make_instances(instances_folder(args.matrix), args.instances, args.matrix)
    megabytes = sum(p.stat().st_size for p in data) / 1e6
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="triphase-bench-", dir=work_folder()))
        baseline = stack.enter_context(checkout(args.baseline)) if args.baseline else None
        results = measure(data, Path(tmp), args, baseline)
    figures = {name: receiver_figures(runs, len(data), megabytes) for name, runs in results.items()}
    speed = {name: float(fig["instances_per_s"]) for name, fig in figures.items()}  # type: ignore[arg-type]
    ratios = {f"triphase_vs_{n}": round(speed["triphase"] / speed[n], 2) for n in figures if n != "triphase"}
    report = header("ingest") | {
        "instances": len(data), "matrix": args.matrix, "megabytes": round(megabytes, 1),
        "database": "postgresql" if args.db_url.startswith("postgresql") else "sqlite",
        "associations": args.associations, "receivers": args.receivers, "baseline_commit": args.baseline or None,
        "figures": figures, "ratios": ratios, "round_ratios": round_ratios(results),
    }
    for name, fig in figures.items():
        cpu = fig["cpu_ms_per_instance"]
        print(f"{name:9s} {fig['instances_per_s']:7.1f} instances/s {fig['mb_per_s']:7.1f} MB/s  "
              f"CPU {cpu['user']:5.2f} + {cpu['system']:5.2f} ms/instance  machine {fig['machine_busy']:.0%} busy  "
              f"(median of {args.repeat})")
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    for key, paired in report["round_ratios"].items():
        interval = paired["interval"]
        coverage = f"{interval['coverage']:.1%}" if interval["coverage"] else "no"
        print(f"  {key} round by round: median {paired['median']:.2f}x, {coverage} interval "
              f"{interval['low']:.2f}-{interval['high']:.2f}x")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    size = "" if args.matrix == 512 else f"-m{args.matrix}"
    path = write_result(f"ingest-{stamp}-{report['database']}-a{args.associations}-r{args.receivers}{size}", report)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
