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
