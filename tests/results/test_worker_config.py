"""Worker configuration that needs no running worker: queue order, GPU pinning and CPU threads."""

from __future__ import annotations

from pathlib import Path

from worker.celery_app import create_app
from worker.devices import cpu_threads_for_process, device_for_process


def test_arrival_work_is_read_before_batch_work(tmp_path: Path) -> None:
    config = tmp_path / "triphase.toml"
    config.write_text('[broker]\nurl = "redis://127.0.0.1:6399/3"\nvisibility_timeout_s = 77\n')
    app = create_app(config)
    options = app.conf.broker_transport_options
    assert options["queue_order_strategy"] == "priority" and options["visibility_timeout"] == 77
    assert [q.name for q in app.conf.task_queues] == ["arrival", "batch"]
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost and app.conf.worker_prefetch_multiplier == 1
    assert {"triphase.analyse", "triphase.send"} <= set(app.tasks)


def test_one_process_per_gpu() -> None:
    assert [device_for_process("auto", i, 2) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert device_for_process("auto", 3, 0) == "cpu"
    assert device_for_process("cuda:1", 0, 4) == "cuda:1" and device_for_process("cpu", 1, 2) == "cpu"


def test_pool_processes_share_the_cores(tmp_path: Path) -> None:
    config = tmp_path / "triphase.toml"
    config.write_text('[broker]\nurl = "redis://127.0.0.1:6399/3"\n')
    assert create_app(config, processes=2).conf.triphase_processes == 2
    assert create_app(config).conf.triphase_processes == 1
    assert [cpu_threads_for_process(n, 2) for n in (1, 2, 3)] == [2, 1, 1]
    assert cpu_threads_for_process(2, 16) == 8 and cpu_threads_for_process(0, 4) == 4
