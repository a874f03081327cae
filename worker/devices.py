"""Which device a worker process uses: one process per GPU on GPU hosts."""

from __future__ import annotations


def device_for_process(setting: str, process_index: int | None, gpu_count: int) -> str:
    """``[models] device`` for one pool process.

    "auto" means: the GPU whose number is this process's index (modulo the GPUs present), so
    ``triphase worker --concurrency N`` on an N-GPU host pins one process per GPU; the CPU when
    there is no GPU. An explicit setting ("cpu", "cuda", "cuda:1") is used as it is.
    """
    if setting != "auto":
        return setting
    if gpu_count <= 0:
        return "cpu"
    return f"cuda:{(process_index or 0) % gpu_count}"


def cpu_threads_for_process(processes: int, cores: int) -> int:
    """Torch's intra-op threads for one of ``processes`` worker processes on ``cores`` cores.

    The cores are shared out: two processes on two cores each get one thread. Left at torch's
    default (every core), each process's threads wait for the other's to be descheduled, and the
    spinning costs more CPU than the small networks' inference itself (measured: 3-4x the CPU time
    per composite batch at two processes on two cores).
    """
    return max(1, cores // max(1, processes))
