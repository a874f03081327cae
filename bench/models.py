"""Model throughput: composites/s and peak memory per architecture; training time per epoch.

Random-initialised networks (speed does not depend on the weights), synthetic composites. On CPU at
batch sizes 1 and 8; on CUDA, when present, in bf16 with channels-last at several batch sizes.
Writes ``bench/results/models-<date>.json`` with the commit, date and machine. From the repo root:

    python bench/models.py [--archs vgg16,resnet50] [--cpu-batches 1,8] [--cuda-batches 64,256,1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

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


def throughput(name: str, device: torch.device, batch: int, seconds: float) -> dict[str, float]:
    spec = default_registry().get(name)
    model = build_model(spec, 5).eval().to(device, memory_format=memory_format(device))
    x = torch.randn(batch, 3, spec.input_size, spec.input_size, device=device)
    x = x.contiguous(memory_format=memory_format(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode(), autocast(device):
        model(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n == 0:
            model(x)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    out = {"batch": batch, "composites_per_s": n * batch / elapsed, "ms_per_batch": 1000 * elapsed / n}
    if device.type == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


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
    parser.add_argument("--cuda-batches", default="64,256,1024")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--train-batches", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    torch.manual_seed(0)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results: dict[str, object] = {"commit": commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "machine": machine(), "inference": [], "training": []}
    for device in devices:
        sizes = [int(b) for b in (args.cpu_batches if device.type == "cpu" else args.cuda_batches).split(",")]
        for name in args.archs.split(","):
            for batch in sizes:
                row = {"architecture": name, "device": device.type,
                       "precision": "bf16 channels-last" if device.type == "cuda" else "fp32",
                       **throughput(name, device, batch, args.seconds)}
                print(json.dumps(row), flush=True)
                results["inference"].append(row)  # type: ignore[union-attr]
        for name, batch_size in (("tinycnn", 16), ("vgg16", 8 if device.type == "cpu" else 64)):
            row = epoch_time(name, device, batches=args.train_batches, batch_size=batch_size, input_size=None)
            print(json.dumps(row), flush=True)
            results["training"].append(row)  # type: ignore[union-attr]
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"models-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
