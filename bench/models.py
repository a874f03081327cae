"""Model throughput: composites/s and peak memory per architecture; training time per epoch.

Random-initialised networks (speed does not depend on the weights), synthetic composites. On CPU in
fp32 at batch sizes 1 and 8; on CUDA, when present, in each variant of ``--cuda-variants`` (fp32,
bf16 autocast, bf16 with channels-last, and that under ``torch.compile``) at several batch sizes,
stopping at the first that does not fit. Without a GPU the result says the GPU figures are missing.
Writes ``bench/results/models-<date>.json`` with the commit, date and machine. From the repo root:

    python bench/models.py [--archs vgg16,resnet50] [--cpu-batches 1,8] [--cuda-batches 64,256,1024,4096]
                           [--cuda-variants fp32,bf16,bf16-cl,bf16-cl-compile]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.provenance import commit  # noqa: E402
from bench.provenance import machine as provenance_machine  # noqa: E402
from models.architectures import build_model, default_registry, head_module  # noqa: E402
from models.device import autocast, memory_format  # noqa: E402
from models.network_training import FitSettings, fit_network  # noqa: E402
from models.registry import PAPER_ARCHITECTURES  # noqa: E402
from models.transforms import Augmentation  # noqa: E402


def machine() -> dict[str, object]:
    """The common description, plus what the figures depend on here: torch threads and the GPU."""
    info = provenance_machine() | {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


@dataclass(frozen=True)
class Variant:
    """How a network runs: precision, memory format, compiled or not."""

    name: str
    bf16: bool = False
    channels_last: bool = False
    compiled: bool = False


VARIANTS = {v.name: v for v in (Variant("fp32"), Variant("bf16", bf16=True),
                                Variant("bf16-cl", bf16=True, channels_last=True),
                                Variant("bf16-cl-compile", bf16=True, channels_last=True, compiled=True))}


def _timed(model: torch.nn.Module, x: torch.Tensor, device: torch.device, variant: Variant, seconds: float
           ) -> tuple[int, float]:
    """Forward passes of ``x`` for about ``seconds`` after warming up: (passes, elapsed seconds)."""
    with torch.inference_mode(), autocast(device, enabled=variant.bf16):
        for _ in range(3 if variant.compiled else 1):  # a compiled model compiles on its first calls
            model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n == 0:
            model(x)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n, time.perf_counter() - start


def throughput(name: str, device: torch.device, batch: int, seconds: float, variant: Variant = VARIANTS["fp32"]
               ) -> dict[str, float]:
    spec = default_registry().get(name)
    fmt = memory_format(device, channels_last=variant.channels_last)
    model: torch.nn.Module = build_model(spec, 5).eval().to(device, memory_format=fmt)
    if variant.compiled:
        model = torch.compile(model)  # type: ignore[assignment]
    x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device).contiguous(memory_format=fmt)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    n, elapsed = _timed(model, x, device, variant, seconds)
    out = {"batch": batch, "composites_per_s": n * batch / elapsed, "ms_per_batch": 1000 * elapsed / n}
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def cuda_rows(names: list[str], sizes: list[int], variants: list[Variant], seconds: float) -> list[dict]:
    """Every architecture x variant x batch size that fits on the GPU."""
    device, rows = torch.device("cuda"), []
    for name in names:
        for variant in variants:
            for batch in sizes:
                try:
                    row = {"architecture": name, "device": "cuda", "precision": variant.name,
                           **throughput(name, device, batch, seconds, variant)}
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(json.dumps({"architecture": name, "precision": variant.name, "batch": batch,
                                      "skipped": "out of GPU memory"}), flush=True)
                    break
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def epoch_time(name: str, device: torch.device, *, batches: int, batch_size: int, input_size: int | None) -> dict:
    spec = default_registry().get(name)
    size = input_size or spec.input_size
    n = batches * batch_size
    x = torch.randn(n, 3, size, size)
    y = np.arange(n) % 5
    model = build_model(spec, 5)
    settings = FitSettings(1, batch_size, 1e-4, 1e-4, 1, Augmentation(), True, True)
    start = time.perf_counter()
    fit_network(model, head_module(model, spec), x_fit=x, y_fit=y, x_val=None, y_val=None, num_classes=5,
                linear_probe=False, class_weighting=True, settings=settings, device=device, seed=0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"architecture": name, "device": device.type, "input_size": size, "batch_size": batch_size,
            "batches": batches, "seconds": elapsed, "composites_per_s": n / elapsed,
            "seconds_per_epoch_of_215_lesions": elapsed / n * 215}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join([*PAPER_ARCHITECTURES, "tinycnn"]))
    parser.add_argument("--cpu-batches", default="1,8")
    parser.add_argument("--cuda-batches", default="64,256,1024,4096")
    parser.add_argument("--cuda-variants", default=",".join(VARIANTS))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--train-batches", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    names = args.archs.split(",")
    results: dict[str, Any] = {"commit": commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": machine(), "inference": [], "training": []}
    for name in names:
        for batch in (int(b) for b in args.cpu_batches.split(",")):
            row = {"architecture": name, "device": "cpu", "precision": "fp32",
                   **throughput(name, torch.device("cpu"), batch, args.seconds)}
            print(json.dumps(row), flush=True)
            results["inference"].append(row)
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        variants = [VARIANTS[v] for v in args.cuda_variants.split(",")]
        results["inference"] += cuda_rows(names, [int(b) for b in args.cuda_batches.split(",")], variants,
                                          args.seconds)
        devices.append(torch.device("cuda"))
    else:
        results["gpu_figures"] = "missing: no CUDA device on this machine"
    for device in devices:
        for name, batch_size in (("tinycnn", 16), ("vgg16", 8 if device.type == "cpu" else 64)):
            row = epoch_time(name, device, batches=args.train_batches, batch_size=batch_size, input_size=None)
            print(json.dumps(row), flush=True)
            results["training"].append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"models-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
